package app_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/brokertest"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// Orders end, and their events reach a RabbitMQ exchange and a JetStream
// stream registered as webhook endpoints, through the whole App: signed,
// one message per event, none of another tenant's; the API shows the
// destinations' URLs masked, refuses bad ones with a 422 naming the field,
// and no password reaches an answer or a log line.
func TestOrderEventsReachBrokerDestinations(t *testing.T) {
	r := brokertest.RabbitMQ(t)
	n := brokertest.JetStream(t)
	logs := &proctest.Buffer{}
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Logger = slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		c.Webhooks.Deliverer.BreakerThreshold = 1000 // the failing destination's attempts all go at once
	})
	b.sim.SetBalance("poor", 5)
	a := b.api(t)

	exchange, queue := r.Exchange(t)
	amqpURL, amqpPassword := r.User(t, exchange)
	st, subject := n.Stream(t)
	natsPassword := "nats-pw-" + strings.Repeat("x", 12) // the test server takes any credentials
	nu, _ := url.Parse(n.DestURL(subject))
	nu.User = url.UserPassword("asyncgate", natsPassword)
	passwords := []string{amqpPassword, natsPassword}

	var answers []string
	record := func(r response) response { answers = append(answers, string(r.body)); return r }

	// Bad destinations: 422, naming the field.
	for _, bad := range []string{"ftp://127.0.0.1/x", strings.Replace(amqpURL, "?exchange=", "?queue=", 1), "nats://asyncgate:" + natsPassword + "@127.0.0.1:4222"} {
		res := record(a.call("POST", "/v1/webhook-endpoints", apiKey, map[string]any{"url": bad}))
		var p struct {
			Errors []struct{ Field, Reason string }
		}
		_ = json.Unmarshal(res.body, &p)
		if res.status != http.StatusUnprocessableEntity || len(p.Errors) != 1 || p.Errors[0].Field != "url" {
			t.Errorf("POST url %s: %d %s, want 422 naming url", webhooks.MaskURL(bad), res.status, res.body)
		}
	}

	var amqpEP, natsEP endpointWithSecret
	record(a.must(http.StatusCreated, "POST", "/v1/webhook-endpoints", apiKey, map[string]any{"url": amqpURL}, &amqpEP))
	record(a.must(http.StatusCreated, "POST", "/v1/webhook-endpoints", apiKey, map[string]any{"url": nu.String()}, &natsEP))
	if !strings.Contains(amqpEP.URL, ":***@") || !strings.Contains(natsEP.URL, ":***@") {
		t.Errorf("endpoint URLs shown as %q and %q, want the passwords masked", amqpEP.URL, natsEP.URL)
	}
	// A destination that fails: its exchange does not exist.
	missing, _ := url.Parse(amqpURL)
	missing.RawQuery = url.Values{"exchange": {brokertest.Name("missing")}}.Encode()
	var missingEP endpointWithSecret
	record(a.must(http.StatusCreated, "POST", "/v1/webhook-endpoints", apiKey, map[string]any{"url": missing.String(), "events": []string{webhooks.EventOrderRejected}}, &missingEP))

	// Another tenant's orders, placed first.
	var theirs []string
	for range 2 {
		var o orders.Order
		a.must(http.StatusAccepted, "POST", "/v1/orders", otherKey, order(), &o)
		theirs = append(theirs, o.ID)
	}
	var executed, rejected orders.Order
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(), &executed)
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(func(m map[string]any) { m["account_id"] = "poor" }), &rejected)
	equal(t, "executed", b.waitTerminal(t, executed.ID, 30*time.Second).Status, orders.Executed)
	equal(t, "rejected", b.waitTerminal(t, rejected.ID, 30*time.Second).Status, orders.Rejected)
	for _, id := range theirs {
		pollUntil(t, 30*time.Second, "the other tenant's order ended", func() bool {
			var o orders.Order
			a.must(http.StatusOK, "GET", "/v1/orders/"+id, otherKey, nil, &o)
			return o.Status.Terminal()
		})
	}

	secret := webhooks.MustParseSecret(amqpEP.Secret)
	type got struct{ id, typ, order string }
	var fromQueue []got
	pollUntil(t, 30*time.Second, "two messages in the queue", func() bool {
		for _, m := range r.Drain(t, queue) {
			h := http.Header{}
			for k, v := range m.Headers {
				if s, ok := v.(string); ok {
					h.Set(k, s)
				}
			}
			if err := webhooks.Verify(secret, h, m.Body, 0); err != nil {
				t.Errorf("message %s does not verify: %v", m.MessageId, err)
			}
			ev := decodeEvent(t, hit{body: m.Body})
			fromQueue = append(fromQueue, got{m.MessageId, ev.Type, ev.Data.ID})
		}
		return len(fromQueue) >= 2
	})
	pollUntil(t, 30*time.Second, "two messages in the stream", func() bool { return len(brokertest.Messages(t, st)) >= 2 })
	var fromStream []got
	for _, m := range brokertest.Messages(t, st) {
		h := http.Header{}
		for k, v := range m.Header {
			h[http.CanonicalHeaderKey(k)] = v
		}
		if err := webhooks.Verify(webhooks.MustParseSecret(natsEP.Secret), h, m.Data, 0); err != nil {
			t.Errorf("stream message does not verify: %v", err)
		}
		ev := decodeEvent(t, hit{body: m.Data})
		fromStream = append(fromStream, got{m.Header.Get("Nats-Msg-Id"), ev.Type, ev.Data.ID})
	}
	// Give late duplicates a moment to show, then count.
	a.onlyDelivery(apiKey, missingEP.ID, "the delivery to the missing exchange failed", func(d webhooks.Delivery) bool {
		return d.Status == webhooks.DeliveryFailed
	})
	for _, m := range r.Drain(t, queue) {
		fromQueue = append(fromQueue, got{id: m.MessageId})
	}
	for name, list := range map[string][]got{"queue": fromQueue, "stream": fromStream} {
		if len(list) != 2 {
			t.Errorf("the %s got %d messages, want 2: %+v", name, len(list), list)
			continue
		}
		types := map[string]string{}
		for _, g := range list {
			types[g.order] = g.typ
			if slices.Contains(theirs, g.order) {
				t.Errorf("the %s got another tenant's order %s", name, g.order)
			}
		}
		if types[executed.ID] != webhooks.EventOrderExecuted || types[rejected.ID] != webhooks.EventOrderRejected {
			t.Errorf("the %s got %+v", name, list)
		}
	}

	// What the API says of the destinations and their deliveries.
	var failed []webhooks.Delivery
	for _, ep := range []string{amqpEP.ID, natsEP.ID, missingEP.ID} {
		record(a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep, apiKey, nil, nil))
		var list struct{ Data []webhooks.Delivery }
		record(a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep+"/deliveries", apiKey, nil, &list))
		if ep == missingEP.ID {
			failed = list.Data
		}
	}
	record(a.must(http.StatusOK, "GET", "/v1/webhook-endpoints", apiKey, nil, nil))
	if len(failed) != 1 || len(failed[0].Attempts) == 0 || !strings.Contains(failed[0].Attempts[0].Error, "NOT_FOUND - no exchange") {
		t.Errorf("deliveries to the missing exchange: %+v", failed)
	}
	pollUntil(t, 10*time.Second, "the failed delivery's last log line", func() bool {
		return strings.Contains(logs.String(), "last attempt spent")
	})
	for _, p := range passwords {
		for _, ans := range answers {
			if strings.Contains(ans, p) {
				t.Errorf("an API answer holds a destination's password: %s", ans)
			}
		}
		if strings.Contains(logs.String(), p) {
			t.Errorf("the log holds a destination's password")
		}
	}
}
