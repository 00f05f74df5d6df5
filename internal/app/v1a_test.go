package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/webhooks"
)

// A v1a endpoint end to end: created through the API with its public key
// (and no secret) in the answer, readable by its tenant only; an executed
// order's webhook verifies with client.VerifyWebhook and the public key read
// from the API, while the tenant's v1 endpoint still verifies with its
// secret; a rotation signs with both key pairs; the test route signs v1a.
func TestV1aEndpointEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)

	r := a.must(http.StatusCreated, "POST", "/v1/webhook-endpoints", apiKey,
		map[string]any{"url": rcv.URL + "/v1a", "events": []string{"order.executed"}, "signature_scheme": "v1a"}, nil)
	var created map[string]any
	if err := json.Unmarshal(r.body, &created); err != nil {
		t.Fatal(err)
	}
	if _, shown := created["secret"]; shown || created["signature_scheme"] != "v1a" || !strings.HasPrefix(created["public_key"].(string), "whpk_") {
		t.Fatalf("created v1a endpoint: %s", r.body)
	}
	id := created["id"].(string)
	if strings.Contains(string(r.body), "whsk_") {
		t.Fatal("the answer shows the private key")
	}
	v1EP, v1Secret := a.createEndpoint(apiKey, rcv.URL+"/v1", webhooks.EventOrderExecuted)
	if v1EP.SignatureScheme != webhooks.SchemeV1 || v1EP.PublicKey != "" {
		t.Fatalf("v1 endpoint: %+v", v1EP)
	}

	var ep webhooks.Endpoint
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+id, apiKey, nil, &ep)
	equal(t, "public key read back", ep.PublicKey, created["public_key"])
	if r := a.call("GET", "/v1/webhook-endpoints/"+id, otherKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("another tenant reads the endpoint: %d %s", r.status, r.body)
	}
	var list struct{ Data []webhooks.Endpoint }
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints", otherKey, nil, &list)
	if len(list.Data) != 0 {
		t.Fatalf("another tenant lists %+v", list.Data)
	}

	receive := func() (v1a, v1 hit) {
		t.Helper()
		b.place(t, order())
		for range 2 {
			h := rcv.next(t)
			switch h.path {
			case "/v1a":
				v1a = h
			case "/v1":
				v1 = h
			}
		}
		if v1a.body == nil || v1.body == nil {
			t.Fatal("want one request at /v1a and one at /v1")
		}
		return v1a, v1
	}
	h, h1 := receive()
	if sig := h.header.Get("webhook-signature"); !strings.HasPrefix(sig, "v1a,") || strings.Contains(sig, "v1,") {
		t.Fatalf("v1a endpoint's signature header %q", sig)
	}
	if err := client.VerifyWebhook(ep.PublicKey, h.header, h.body); err != nil {
		t.Fatalf("VerifyWebhook with the public key: %v", err)
	}
	if err := client.VerifyWebhook(v1Secret.String(), h1.header, h1.body); err != nil {
		t.Fatalf("VerifyWebhook of the v1 endpoint with its secret: %v", err)
	}
	if err := verifyOfficial(t, v1Secret, h1); err != nil {
		t.Fatalf("official library on the v1 endpoint: %v", err)
	}
	if err := client.VerifyWebhook(ep.PublicKey, h1.header, h1.body); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("public key on the v1 delivery: %v, want ErrInvalidSignature", err)
	}
	if err := client.VerifyWebhook(ep.PublicKey, h.header, bytes.Replace(h.body, []byte(`"executed"`), []byte(`"rejected"`), 1)); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("tampered body: %v, want ErrInvalidSignature", err)
	}
	if d := a.onlyDelivery(apiKey, id, "v1a delivery delivered", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered }); d.EventID != h.header.Get("webhook-id") {
		t.Errorf("delivery %+v", d)
	}

	// Rotation: a new key pair, no secret shown, both sign meanwhile.
	r = a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+id+"/rotate-secret", apiKey, nil, nil)
	var rotated map[string]any
	_ = json.Unmarshal(r.body, &rotated)
	newKey, _ := rotated["public_key"].(string)
	if _, shown := rotated["secret"]; shown || newKey == "" || newKey == ep.PublicKey || rotated["previous_secret_expires_at"] == nil {
		t.Fatalf("rotated: %s", r.body)
	}
	h, _ = receive()
	equal(t, "entries during the overlap", len(strings.Fields(h.header.Get("webhook-signature"))), 2)
	for _, k := range []string{ep.PublicKey, newKey} {
		if err := client.VerifyWebhook(k, h.header, h.body); err != nil {
			t.Errorf("key %s during the overlap: %v", k, err)
		}
	}

	// The test route signs as deliveries do.
	var res webhooks.TestResult
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+id+"/test", apiKey, nil, &res)
	th := rcv.next(t)
	if err := client.VerifyWebhook(newKey, th.header, th.body); err != nil || !res.Success {
		t.Fatalf("test event: %v, result %+v", err, res)
	}
	// A refusal is explained in terms of the public key, not a secret.
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+id+"/test", apiKey, nil, &res)
	rcv.next(t)
	rcv.answer(nil)
	if res.Cause == nil || !strings.Contains(res.Cause.Detail, "public_key") {
		t.Errorf("refused v1a test explained as %+v", res.Cause)
	}

	// PATCH: the v1 endpoint switches to v1a (public key, no secret); a
	// scheme that does not exist is a 422 naming the field.
	r = a.must(http.StatusOK, "PATCH", "/v1/webhook-endpoints/"+v1EP.ID, apiKey, map[string]any{"signature_scheme": "v1a"}, nil)
	var patched map[string]any
	_ = json.Unmarshal(r.body, &patched)
	if _, shown := patched["secret"]; shown || patched["signature_scheme"] != "v1a" || patched["public_key"] == nil {
		t.Fatalf("patched: %s", r.body)
	}
	r = a.call("PATCH", "/v1/webhook-endpoints/"+v1EP.ID, apiKey, map[string]any{"signature_scheme": "v2"})
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "signature_scheme") {
		t.Fatalf("bad scheme: %d %s", r.status, r.body)
	}
	if r := a.call("PATCH", "/v1/webhook-endpoints/"+id, otherKey, map[string]any{"signature_scheme": "v1"}); r.status != http.StatusNotFound {
		t.Fatalf("another tenant patches: %d", r.status)
	}
}
