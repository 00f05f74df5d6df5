package app_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/oteltest"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

const adminKey = "admin-key-0123456789abcdef"

// The JSON log of a whole scenario — API and admin keys used, webhook
// secrets created and rotated, signed deliveries, one failing endpoint —
// holds no secret, and every line about an order names the order, its
// tenant and its trace.
func TestLogsCarryTraceIDsAndNoSecrets(t *testing.T) {
	// Not parallel: oteltest.Install sets the global tracer provider.
	oteltest.Install(t)
	logs := &proctest.Buffer{}
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Logger = slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		c.Server.AdminKeys = map[string]string{adminKey: "acme"}
		c.Webhooks.Store.MaxAttempts = 2
	})
	b.sim.SetBalance("poor", 5)
	a := b.api(t)
	good, bad := newHookReceiver(t), newHookReceiver(t)
	bad.answer(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("nope"))
	})
	_, secret := a.createEndpoint(apiKey, good.URL)
	var rotated endpointWithSecret
	badEP, badSecret := a.createEndpoint(apiKey, bad.URL, webhooks.EventOrderRejected)
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+badEP.ID+"/rotate-secret", apiKey, nil, &rotated)
	var cb struct{ Secret string }
	a.must(http.StatusOK, "POST", "/v1/callback-secret/rotate", apiKey, nil, &cb)
	secrets := []string{secret.String(), badSecret.String(), rotated.Secret, cb.Secret}

	var executed, rejected orders.Order
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(func(m map[string]any) { m["callback_url"] = good.URL + "/cb" }), &executed)
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(func(m map[string]any) { m["account_id"] = "poor" }), &rejected)
	a.must(http.StatusUnauthorized, "GET", "/v1/orders", "wrong-key-0123456789abcdef", nil, nil)
	a.must(http.StatusOK, "GET", "/admin/api/whoami", adminKey, nil, nil)
	equal(t, "executed", b.waitTerminal(t, executed.ID, 30*time.Second).Status, orders.Executed)
	equal(t, "rejected", b.waitTerminal(t, rejected.ID, 30*time.Second).Status, orders.Rejected)

	// Three deliveries to the good receiver (two events, one callback),
	// two attempts at the failing one.
	var signatures []string
	for range 3 {
		signatures = append(signatures, strings.Fields(good.next(t).header.Get("webhook-signature"))...)
	}
	for range 2 {
		signatures = append(signatures, strings.Fields(bad.next(t).header.Get("webhook-signature"))...)
	}
	a.onlyDelivery(apiKey, badEP.ID, "the failing delivery failed", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryFailed })
	pollUntil(t, 10*time.Second, "the failed delivery's last log line", func() bool {
		return strings.Contains(logs.String(), "last attempt spent")
	})

	text := logs.String()
	forbidden := map[string]string{"API key": apiKey, "admin key": adminKey, "wrong API key": "wrong-key-0123456789abcdef"}
	for i, s := range secrets {
		forbidden["secret "+string(rune('A'+i))] = s
		forbidden["secret "+string(rune('A'+i))+" without its prefix"] = strings.TrimPrefix(s, "whsec_")
	}
	for i, sig := range signatures {
		if !strings.HasPrefix(sig, "v1,") {
			t.Fatalf("signature %q", sig)
		}
		forbidden["signature "+string(rune('a'+i))] = strings.TrimPrefix(sig, "v1,")
	}
	for what, s := range forbidden {
		if strings.Contains(text, s) {
			t.Errorf("the log holds the %s", what)
		}
	}

	var aboutOrders, requests int
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		if m["msg"] == "request" && m["route"] == "/v1/orders" {
			requests++
			if m[telemetry.TraceIDKey] == nil || m["request_id"] == nil {
				t.Errorf("request line without trace or request id: %s", line)
			}
		}
		if _, ok := m["delivery_id"]; ok && m["order_id"] == nil {
			t.Errorf("a delivery's line without its order_id: %s", line)
		}
		if _, ok := m["order_id"]; !ok {
			continue
		}
		aboutOrders++
		for _, k := range []string{"tenant", telemetry.TraceIDKey, telemetry.SpanIDKey} {
			if s, _ := m[k].(string); s == "" {
				t.Errorf("line about an order without %s: %s", k, line)
			}
		}
	}
	if aboutOrders < 6 { // at least 3 steps and an end for one, 2 and an end for the other
		t.Errorf("%d lines about orders, want at least 6:\n%s", aboutOrders, text)
	}
	if requests < 3 {
		t.Errorf("%d request lines for /v1/orders, want at least 3", requests)
	}
}
