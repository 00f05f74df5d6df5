package app_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/webhooks"
)

// PATCH /v1/webhook-endpoints/{id}: the changes hold, the next event goes
// to the new URL and only for the listed types, another tenant cannot
// touch it, and bad patches get 4xx problems.
func TestWebhookEndpointPatch(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	old := newHookReceiver(t)
	rcv := newHookReceiver(t)
	ep, secret := a.createEndpoint(apiKey, old.URL+"/old", webhooks.EventOrderFailed)

	var got webhooks.Endpoint
	a.must(http.StatusOK, "PATCH", "/v1/webhook-endpoints/"+ep.ID, apiKey,
		map[string]any{"url": rcv.URL + "/new", "events": []string{"order.executed"}, "description": "moved", "max_per_second": 20}, &got)
	if got.URL != rcv.URL+"/new" || got.Description != "moved" || got.MaxPerSecond != 20 || !slices.Equal(got.Events, []string{"order.executed"}) {
		t.Fatalf("patched endpoint = %+v", got)
	}
	var read webhooks.Endpoint
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, &read)
	equal(t, "read back", read.URL+" "+read.Description, got.URL+" moved")

	o := b.place(t, order())
	h := rcv.next(t)
	if err := verifyOfficial(t, secret, h); err != nil {
		t.Fatalf("the secret changed with the patch: %v", err)
	}
	equal(t, "event at the new URL", decodeEvent(t, h).Data.ID, o.ID)
	if n := old.count.Load(); n != 0 {
		t.Fatalf("the old URL got %d requests", n)
	}

	// Partial: only the description changes.
	a.must(http.StatusOK, "PATCH", "/v1/webhook-endpoints/"+ep.ID, apiKey, map[string]any{"description": "again"}, &got)
	equal(t, "partial patch", got.Description+" "+got.URL+" "+jsonOf(got.MaxPerSecond), "again "+rcv.URL+"/new 20")

	for _, tt := range []struct {
		body   any
		status int
	}{
		{map[string]any{"events": []string{}}, 422},
		{map[string]any{"events": []string{"order.lost"}}, 422},
		{map[string]any{"max_per_second": -1}, 422},
		{map[string]any{"max_per_second": 10001}, 422},
		{map[string]any{"url": "ftp://example.com"}, 422},
		{map[string]any{"colour": "red"}, 422},
		{`{"description":`, 400},
	} {
		r := a.call("PATCH", "/v1/webhook-endpoints/"+ep.ID, apiKey, tt.body)
		if r.status != tt.status {
			t.Errorf("PATCH %v: %d %s, want %d", tt.body, r.status, r.body, tt.status)
		}
	}
	if r := a.call("PATCH", "/v1/webhook-endpoints/"+ep.ID, otherKey, map[string]any{"description": "mine"}); r.status != http.StatusNotFound {
		t.Fatalf("another tenant's PATCH: %d %s, want 404", r.status, r.body)
	}
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, &read)
	equal(t, "after refused patches", read.Description, "again")
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

// max_per_second is honoured by delivery: with 1 a second, three events
// arrive at least a second apart each, and none is lost.
func TestWebhookMaxPerSecondIsHonoured(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, _ := a.createEndpoint(apiKey, rcv.URL+"/hooks")
	a.must(http.StatusOK, "PATCH", "/v1/webhook-endpoints/"+ep.ID, apiKey, map[string]any{"max_per_second": 1}, nil)
	for range 3 {
		b.place(t, order())
	}
	var at []time.Time
	for range 3 {
		rcv.next(t)
		at = append(at, time.Now())
	}
	if span := at[2].Sub(at[0]); span < 1900*time.Millisecond {
		t.Fatalf("three deliveries within %s at 1/s", span)
	}
	pollUntil(t, 30*time.Second, "three delivered, no attempt spent on the cap", func() bool {
		list := a.deliveries(apiKey, ep.ID, "?status=delivered")
		for _, d := range list {
			if d.AttemptCount != 1 {
				t.Fatalf("delivery %s made %d attempts", d.ID, d.AttemptCount)
			}
		}
		return len(list) == 3
	})
}

// GET /v1/event-types: every type, each with a JSON Schema that a real
// webhook body of that type passes and a wrong one fails.
func TestEventTypesCatalog(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	var list struct {
		Data []struct {
			Type        string
			Description string
			Schema      json.RawMessage
		}
	}
	a.must(http.StatusOK, "GET", "/v1/event-types", apiKey, nil, &list)
	var types []string
	schemas := map[string]*jsonschema.Schema{}
	for _, et := range list.Data {
		types = append(types, et.Type)
		if et.Description == "" {
			t.Errorf("%s has no description", et.Type)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(et.Schema))
		if err != nil {
			t.Fatal(err)
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		loc := "https://asyncgate.test/" + et.Type + ".json"
		if err := c.AddResource(loc, doc); err != nil {
			t.Fatal(err)
		}
		if schemas[et.Type], err = c.Compile(loc); err != nil {
			t.Fatalf("%s: the schema does not compile: %v\n%s", et.Type, err, et.Schema)
		}
	}
	equal(t, "event types", types, webhooks.EventTypes)

	rcv := newHookReceiver(t)
	a.createEndpoint(apiKey, rcv.URL+"/hooks")
	b.place(t, order())
	b.place(t, order(func(m map[string]any) { m["quantity"] = 1e9 }))
	seen := map[string]bool{}
	for range 2 {
		h := rcv.next(t)
		ev := decodeEvent(t, h)
		body, _ := jsonschema.UnmarshalJSON(bytes.NewReader(h.body))
		if err := schemas[ev.Type].Validate(body); err != nil {
			t.Errorf("a real %s body fails its schema: %v\n%s", ev.Type, err, h.body)
		}
		for typ, s := range schemas {
			if typ != ev.Type && s.Validate(body) == nil {
				t.Errorf("a %s body passes the %s schema", ev.Type, typ)
			}
		}
		seen[ev.Type] = true
	}
	if !seen["order.executed"] || !seen["order.rejected"] {
		t.Fatalf("events seen: %v", seen)
	}
	if r := a.call("GET", "/v1/event-types", "not-a-key-0123456789", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("without a key: %d", r.status)
	}
}

// POST /v1/webhook-endpoints/{id}/test through the API: a working receiver
// gets a signed webhook.test, a refusing one is explained, another tenant
// gets 404, and the cause codes of the spec are the code's.
func TestWebhookEndpointTestRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, secret := a.createEndpoint(apiKey, rcv.URL+"/hooks")
	var res webhooks.TestResult
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/test", apiKey, nil, &res)
	h := rcv.next(t)
	if err := verifyOfficial(t, secret, h); err != nil {
		t.Fatalf("the official library rejects the test event: %v", err)
	}
	if !res.Success || res.StatusCode != 200 || h.header.Get("webhook-id") != res.EventID {
		t.Fatalf("test = %+v", res)
	}
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/test", apiKey, nil, &res)
	rcv.next(t)
	if res.Success || res.Cause == nil || res.Cause.Code != webhooks.CauseSignatureRefused || res.StatusCode != 401 {
		t.Fatalf("refused test = %+v", res)
	}
	if r := a.call("POST", "/v1/webhook-endpoints/"+ep.ID+"/test", otherKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("another tenant's test: %d", r.status)
	}
	// The tests are not deliveries.
	if list := a.deliveries(apiKey, ep.ID, ""); len(list) != 0 {
		t.Fatalf("tests left %d deliveries", len(list))
	}
	equal(t, "cause codes (code vs spec)", webhooks.CauseCodes, apitestEnum(t, "WebhookTestCause", "code"))
}

// apitestEnum is the enum of a property of a schema of openapi.yaml.
func apitestEnum(t *testing.T, schema, prop string) []string {
	t.Helper()
	var out []string
	for _, e := range apitest.Spec(t).Components.Schemas[schema].Value.Properties[prop].Value.Enum {
		out = append(out, e.(string))
	}
	return out
}

// POST /v1/webhook-endpoints/{id}/recover: the endpoint's failed
// deliveries since a time are sent again, with their ids, as a tracked job
// whose progress reaches done; later ones and other tenants are untouched.
func TestWebhookRecoverRedeliversFailedSince(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) { c.Webhooks.Store.MaxAttempts = 2 })
	a := b.api(t)
	rcv := newHookReceiver(t)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	ep, _ := a.createEndpoint(apiKey, rcv.URL+"/hooks")
	start := time.Now().Add(-time.Second)
	for range 2 {
		b.place(t, order())
	}
	pollUntil(t, 60*time.Second, "both deliveries failed", func() bool {
		return len(a.deliveries(apiKey, ep.ID, "?status=failed")) == 2
	})
	failed := map[string]bool{}
	for _, d := range a.deliveries(apiKey, ep.ID, "?status=failed") {
		failed[d.EventID] = true
	}
	rcv.answer(nil) // fixed: 200
	for len(rcv.hits) > 0 {
		<-rcv.hits
	}

	var rec webhooks.Recovery
	r := a.must(http.StatusAccepted, "POST", "/v1/webhook-endpoints/"+ep.ID+"/recover", apiKey, map[string]any{"since": start.UTC().Format(time.RFC3339Nano)}, &rec)
	if r.header.Get("Location") != "/v1/webhook-recoveries/"+rec.ID || rec.EndpointID != ep.ID {
		t.Fatalf("recover: %+v, Location %q", rec, r.header.Get("Location"))
	}
	pollUntil(t, 60*time.Second, "the recovery done", func() bool {
		a.must(http.StatusOK, "GET", "/v1/webhook-recoveries/"+rec.ID, apiKey, nil, &rec)
		return rec.Status == webhooks.RecoveryDone
	})
	if rec.Total != 2 || rec.Redelivered != 2 || rec.Skipped != 0 {
		t.Fatalf("recovery = %+v", rec)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		h := rcv.next(t)
		got[h.header.Get("webhook-id")] = true
	}
	equal(t, "redelivered events", len(got), 2)
	for id := range got {
		if !failed[id] {
			t.Fatalf("redelivered %s, which had not failed", id)
		}
	}
	pollUntil(t, 30*time.Second, "both delivered", func() bool {
		return len(a.deliveries(apiKey, ep.ID, "?status=delivered")) == 2
	})

	// Since now: nothing to do.
	a.must(http.StatusAccepted, "POST", "/v1/webhook-endpoints/"+ep.ID+"/recover", apiKey, map[string]any{"since": time.Now().Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)}, &rec)
	pollUntil(t, 30*time.Second, "the empty recovery done", func() bool {
		a.must(http.StatusOK, "GET", "/v1/webhook-recoveries/"+rec.ID, apiKey, nil, &rec)
		return rec.Status == webhooks.RecoveryDone
	})
	equal(t, "empty recovery", rec.Total, 0)

	// Another tenant sees none of it; bad input is a 4xx.
	if r := a.call("GET", "/v1/webhook-recoveries/"+rec.ID, otherKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("another tenant's recovery: %d", r.status)
	}
	if r := a.call("POST", "/v1/webhook-endpoints/"+ep.ID+"/recover", otherKey, map[string]any{"since": start.Format(time.RFC3339)}); r.status != http.StatusNotFound {
		t.Fatalf("another tenant's recover: %d", r.status)
	}
	for _, body := range []any{map[string]any{}, map[string]any{"since": "yesterday"}, map[string]any{"since": time.Now().Add(time.Hour).Format(time.RFC3339)}} {
		if r := a.call("POST", "/v1/webhook-endpoints/"+ep.ID+"/recover", apiKey, body); r.status != http.StatusUnprocessableEntity && r.status != http.StatusBadRequest {
			t.Errorf("recover %v: %d %s", body, r.status, r.body)
		}
	}
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/disable", apiKey, nil, nil)
	if r := a.call("POST", "/v1/webhook-endpoints/"+ep.ID+"/recover", apiKey, map[string]any{"since": start.Format(time.RFC3339)}); r.status != http.StatusConflict {
		t.Fatalf("recover a disabled endpoint: %d %s", r.status, r.body)
	}
	if r := a.call("GET", "/v1/webhook-recoveries/rcv_nope", apiKey, nil); r.status != http.StatusNotFound {
		t.Fatalf("bad recovery id: %d", r.status)
	}
}
