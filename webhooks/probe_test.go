package webhooks_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

func TestEndpointTestSendsASignedTestEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Receiver", "laptop")
		w.Write([]byte(strings.Repeat("ok ", 2000)))
	})
	ep, secret := b.endpoint(t, "acme", rcv.URL+"/in")
	res, err := b.deliverer.TestEndpoint(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	req := rcv.next(t)
	if err := webhooks.Verify(secret, req.header, req.body, 5*time.Minute); err != nil {
		t.Fatalf("the test event does not verify: %v", err)
	}
	if !res.Success || res.StatusCode != 200 || res.Cause != nil || res.Headers["X-Receiver"] != "laptop" || !res.BodyTruncated || !strings.HasPrefix(res.Body, "ok ok") || res.DurationMS <= 0 {
		t.Fatalf("result = %+v", res)
	}
	if req.header.Get("webhook-id") != res.EventID || !strings.Contains(string(req.body), `"type":"webhook.test"`) {
		t.Fatalf("sent %s %s, result id %s", req.header.Get("webhook-id"), req.body, res.EventID)
	}
	// Nothing recorded, nothing in the feed.
	if list, _, _ := b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{}); len(list) != 0 {
		t.Fatalf("the test left deliveries: %v", list)
	}
	if p, _ := b.store.Feed(ctx, "acme", "", 10); len(p.Events) != 0 {
		t.Fatalf("the test event is in the feed")
	}
	if _, err := b.deliverer.TestEndpoint(ctx, "globex", ep.ID); !errors.Is(err, webhooks.ErrEndpointNotFound) {
		t.Fatalf("another tenant's test: %v", err)
	}
}

func TestEndpointTestExplainsRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, func(o *options) { o.deliverer.Timeout = 2 * time.Second })
	cause := func(url string, prep func(ep *webhooks.Endpoint)) *webhooks.TestResult {
		t.Helper()
		ep, _ := b.endpoint(t, "acme", url)
		if prep != nil {
			prep(ep)
		}
		res, err := b.deliverer.TestEndpoint(ctx, "acme", ep.ID)
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.Cause == nil {
			t.Fatalf("%s: result = %+v, want a failure with a cause", url, res)
		}
		return res
	}
	server := func(h http.HandlerFunc) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s.URL
	}
	refuse := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) }
	skewed := server(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Date", time.Now().Add(-10*time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusUnauthorized)
	})
	release := make(chan struct{})
	hang := server(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // before the server's Close (cleanups run last first)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(tlsSrv.Close)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String() + "/in"
	ln.Close()

	for _, tt := range []struct {
		name, url string
		prep      func(*webhooks.Endpoint)
		want      string
	}{
		{"skew", skewed, nil, webhooks.CauseTimestampSkew},
		{"rotation", server(refuse), func(ep *webhooks.Endpoint) {
			if _, _, err := b.store.RotateSecret(ctx, "acme", ep.ID); err != nil {
				t.Fatal(err)
			}
		}, webhooks.CauseSecretRotated},
		{"signature", server(refuse), nil, webhooks.CauseSignatureRefused},
		{"redirect", server(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://example.com/x", http.StatusFound)
		}), nil, webhooks.CauseRedirect},
		{"timeout", hang, nil, webhooks.CauseTimeout},
		{"tls", tlsSrv.URL, nil, webhooks.CauseTLS},
		{"refused", closed, nil, webhooks.CauseConnectionRefused},
		{"not found", server(http.NotFound), nil, webhooks.CauseNotFound},
		{"receiver error", server(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(502) }), nil, webhooks.CauseReceiverError},
	} {
		if res := cause(tt.url, tt.prep); res.Cause.Code != tt.want {
			t.Errorf("%s: cause %+v (error %q), want %s", tt.name, res.Cause, res.Error, tt.want)
		}
	}
}
