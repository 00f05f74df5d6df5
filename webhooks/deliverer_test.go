package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/asyncgate/asyncgate/webhooks"
)

// verifyOfficial checks a received request with the official Standard
// Webhooks library.
func verifyOfficial(t *testing.T, secret webhooks.Secret, req request) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret.String())
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(req.body, req.header)
}

func TestDeliverSignsForTheOfficialLibrary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	ep, oldSecret := b.endpoint(t, "acme", rcv.URL+"/in")

	ev, refs := b.publish(t, "acme", "")
	res := b.deliver(t, one(t, refs))
	if res.Outcome != webhooks.Done || res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("result = %+v, want delivered", res)
	}
	req := rcv.next(t)
	if err := verifyOfficial(t, oldSecret, req); err != nil {
		t.Fatalf("the official library rejects our delivery: %v", err)
	}
	if got := req.header.Get("webhook-id"); got != ev.ID {
		t.Errorf("webhook-id = %q, want the event id %q", got, ev.ID)
	}
	if ct := req.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body struct {
		ID, Type  string
		CreatedAt time.Time `json:"created_at"`
		Sequence  int64
		Data      map[string]any
	}
	if err := json.Unmarshal(req.body, &body); err != nil {
		t.Fatalf("body %s: %v", req.body, err)
	}
	if body.ID != ev.ID || body.Type != "order.executed" || body.Sequence != 4 || body.Data["status"] != "executed" || body.CreatedAt.IsZero() {
		t.Errorf("body = %s", req.body)
	}

	// During a rotation both secrets verify; a stranger's does not, nor a
	// tampered body.
	_, newSecret, err := b.store.RotateSecret(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, refs = b.publish(t, "acme", "")
	b.deliver(t, one(t, refs))
	req = rcv.next(t)
	if n := len(strings.Fields(req.header.Get("webhook-signature"))); n != 2 {
		t.Errorf("signatures during rotation: %d, want 2", n)
	}
	for name, s := range map[string]webhooks.Secret{"new": newSecret, "old": oldSecret} {
		if err := verifyOfficial(t, s, req); err != nil {
			t.Errorf("the official library rejects the %s secret during rotation: %v", name, err)
		}
	}
	stranger, _ := webhooks.NewSecret()
	if err := verifyOfficial(t, stranger, req); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("a stranger's secret: %v, want ErrNoMatchingSignature", err)
	}
	tampered := request{header: req.header, body: []byte(strings.Replace(string(req.body), "executed", "rejected", 1))}
	if err := verifyOfficial(t, newSecret, tampered); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("a tampered body: %v, want ErrNoMatchingSignature", err)
	}

	// After the grace period only the new secret signs.
	b.clock.advance(25 * time.Hour)
	_, refs = b.publish(t, "acme", "")
	b.deliver(t, one(t, refs))
	req = rcv.next(t)
	if n := len(strings.Fields(req.header.Get("webhook-signature"))); n != 1 {
		t.Errorf("signatures after the grace period: %d, want 1", n)
	}
	if err := webhooks.VerifyAt(newSecret, req.header, req.body, 0, b.clock.now()); err != nil {
		t.Errorf("new secret after the grace period: %v", err)
	}
	if err := webhooks.VerifyAt(oldSecret, req.header, req.body, 0, b.clock.now()); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("old secret after the grace period: %v, want ErrInvalidSignature", err)
	}
}

func TestDeliverToCallbackURLWithTenantSecret(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t)
	secret, _, err := b.store.RotateCallbackSecret(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	_, refs := b.publish(t, "acme", rcv.URL+"/callback")
	r := one(t, refs)
	if r.EndpointID != "" {
		t.Fatalf("ref = %+v, want a callback delivery", r)
	}
	if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("result = %+v", res)
	}
	if err := verifyOfficial(t, secret, rcv.next(t)); err != nil {
		t.Fatalf("the callback does not verify with the tenant's callback secret: %v", err)
	}
}

func TestDeliverRetriesOnScheduleThenExhausts(t *testing.T) {
	t.Parallel()
	b := setup(t) // 3 attempts, waits of 1m then 2m
	rcv := newReceiver(t)
	rcv.answer(status(http.StatusInternalServerError))
	b.endpoint(t, "acme", rcv.URL)
	ev, refs := b.publish(t, "acme", "")
	r := one(t, refs)

	res := b.deliver(t, r)
	if res.Outcome != webhooks.Retry || res.Delay != time.Minute || res.Status != webhooks.DeliveryPending {
		t.Fatalf("first attempt: %+v, want a retry in 1m", res)
	}
	// Too early: postponed, no request, no attempt spent.
	if res := b.deliver(t, r); res.Outcome != webhooks.Postpone || res.Delay <= 0 || res.Delay > time.Minute {
		t.Fatalf("early run: %+v, want postponed until due", res)
	}
	b.clock.advance(time.Minute)
	if res := b.deliver(t, r); res.Outcome != webhooks.Retry || res.Delay != 2*time.Minute {
		t.Fatalf("second attempt: %+v, want a retry in 2m", res)
	}
	b.clock.advance(2 * time.Minute)
	res = b.deliver(t, r)
	if res.Outcome != webhooks.Exhausted || res.Status != webhooks.DeliveryFailed || !strings.Contains(res.Err.Error(), "500") {
		t.Fatalf("third attempt: %+v, want exhausted", res)
	}
	for range 3 {
		if id := rcv.next(t).header.Get("webhook-id"); id != ev.ID {
			t.Errorf("webhook-id %q, want %q on every attempt", id, ev.ID)
		}
	}
	d := b.delivery(t, r)
	if d.Status != webhooks.DeliveryFailed || d.AttemptCount != 3 || len(d.Attempts) != 3 || d.NextAttemptAt != nil {
		t.Fatalf("delivery = %+v", d)
	}
	for _, a := range d.Attempts {
		if a.StatusCode != 500 || a.Error == "" || a.LatencyMS <= 0 || a.At.IsZero() {
			t.Errorf("attempt = %+v", a)
		}
	}
	// A failed delivery's task does nothing more...
	if res := b.deliver(t, r); res.Outcome != webhooks.Done || rcv.count.Load() != 3 {
		t.Fatalf("run after failure: %+v, %d requests", res, rcv.count.Load())
	}
	// ...until it is redelivered, with one more attempt.
	rcv.answer(nil)
	if _, err := b.store.PrepareRedelivery(context.Background(), "acme", r.DeliveryID); err != nil {
		t.Fatal(err)
	}
	if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("redelivery: %+v", res)
	}
	if id := rcv.next(t).header.Get("webhook-id"); id != ev.ID {
		t.Errorf("redelivered webhook-id %q, want %q", id, ev.ID)
	}
}

func TestDeliverHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t)
	b.endpoint(t, "acme", rcv.URL)
	for _, tt := range []struct {
		name  string
		code  int
		value func() string
		want  time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, func() string { return "7" }, 7 * time.Second},
		{"503 date", http.StatusServiceUnavailable, func() string { return b.clock.now().Add(90 * time.Second).UTC().Format(http.TimeFormat) }, 90 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", tt.value())
				w.WriteHeader(tt.code)
			})
			_, refs := b.publish(t, "acme", "")
			r := one(t, refs)
			res := b.deliver(t, r)
			if res.Outcome != webhooks.Retry || res.Delay < tt.want-time.Second || res.Delay > tt.want {
				t.Fatalf("result = %+v, want a retry after about %s", res, tt.want)
			}
			// The endpoint's other deliveries wait too.
			_, refs = b.publish(t, "acme", "")
			if res := b.deliver(t, one(t, refs)); res.Outcome != webhooks.Postpone {
				t.Fatalf("another delivery during Retry-After: %+v, want postponed", res)
			}
			rcv.answer(nil)
			b.clock.advance(tt.want)
			if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
				t.Fatalf("after Retry-After: %+v", res)
			}
		})
	}
}

func TestDeliverGoneDisablesEndpointAndHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	rcv.answer(status(http.StatusGone))
	ep, _ := b.endpoint(t, "acme", rcv.URL)
	ev, refs := b.publish(t, "acme", "")
	r := one(t, refs)
	if res := b.deliver(t, r); res.Outcome != webhooks.Done || res.Status != webhooks.DeliveryHeld {
		t.Fatalf("410: %+v, want done and held", res)
	}
	got, _ := b.store.Endpoint(ctx, "acme", ep.ID)
	if got.Status != webhooks.EndpointDisabled || got.DisabledReason != webhooks.ReasonGone {
		t.Fatalf("endpoint after 410 = %+v", got)
	}
	// New events for it are held, not attempted.
	ev2, refs := b.publish(t, "acme", "")
	if len(refs) != 0 {
		t.Fatalf("deliveries scheduled for a disabled endpoint: %+v", refs)
	}
	held, _, err := b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Status: webhooks.DeliveryHeld})
	if err != nil || len(held) != 2 {
		t.Fatalf("held deliveries = %d, %v; want 2", len(held), err)
	}

	// Enabled again: both come back, and go.
	rcv.answer(nil)
	_, ids, err := b.store.EnableEndpoint(ctx, "acme", ep.ID)
	if err != nil || len(ids) != 2 {
		t.Fatalf("enable: held %v, %v", ids, err)
	}
	for _, id := range ids {
		r, err := b.store.PrepareRedelivery(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		if data := map[string]json.RawMessage{ev.ID: ev.Data, ev2.ID: ev2.Data}[r.EventID]; r.OrderID == "" || !strings.Contains(string(data), `"id":"`+r.OrderID+`"`) {
			t.Errorf("redelivery's reference names order %q; its event is %s", r.OrderID, data)
		}
		if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("held delivery after enable: %+v", res)
		}
	}
	if id := rcv.next(t).header.Get("webhook-id"); id != ev.ID {
		t.Errorf("first request: webhook-id %q, want %q", id, ev.ID)
	}
}

func TestDeliverTimesOutSlowReceiver(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) { o.deliverer.Timeout = 200 * time.Millisecond })
	rcv := newReceiver(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rcv.answer(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	b.endpoint(t, "acme", rcv.URL)
	_, refs := b.publish(t, "acme", "")
	start := time.Now()
	res := b.deliver(t, one(t, refs))
	if res.Outcome != webhooks.Retry || !strings.Contains(res.Err.Error(), "no answer within 200ms") {
		t.Fatalf("result = %+v, want a retry after a timeout", res)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the attempt took %s, want about the 200ms timeout", d)
	}
}

func TestDeliverDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	elsewhere := newReceiver(t)
	rcv := newReceiver(t)
	rcv.answer(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/stolen", http.StatusTemporaryRedirect)
	})
	b.endpoint(t, "acme", rcv.URL)
	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)
	res := b.deliver(t, r)
	if res.Outcome != webhooks.Retry || !strings.Contains(res.Err.Error(), "not followed") {
		t.Fatalf("result = %+v, want a failed attempt", res)
	}
	if a := b.delivery(t, r).Attempts[0]; a.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("attempt = %+v, want status 307", a)
	}
	if n := elsewhere.count.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests, want none", n)
	}
}

func TestDeliverReadsAtMostTheResponseLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t)
	written := make(chan int64, 1)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("A", 64<<10))
		var n int64
		for range 1024 { // 64 MiB, unless the client stops reading
			m, err := w.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		written <- n
	})
	b.endpoint(t, "acme", rcv.URL)
	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)
	if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("result = %+v", res)
	}
	a := b.delivery(t, r).Attempts[0]
	if len(a.Response) != 4096 || !a.ResponseTruncated {
		t.Fatalf("logged response: %d bytes, truncated=%v; want 4096, true", len(a.Response), a.ResponseTruncated)
	}
	select {
	case n := <-written:
		if n >= 64<<20 {
			t.Fatalf("the receiver wrote its whole %d bytes: the body was drained, not dropped", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver is still writing: the connection was not dropped")
	}
}

func TestBreakerPostponesThenProbes(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) {
		o.deliverer.BreakerThreshold = 2
		o.deliverer.BreakerCooldown = 10 * time.Second
		o.deliverer.BreakerMaxCooldown = 40 * time.Second
	})
	rcv := newReceiver(t)
	rcv.answer(status(http.StatusInternalServerError))
	b.endpoint(t, "acme", rcv.URL)
	var refs []webhooks.Ref
	for range 3 {
		_, r := b.publish(t, "acme", "")
		refs = append(refs, one(t, r))
	}
	b.deliver(t, refs[0])
	b.deliver(t, refs[1]) // the second failure in a row opens the breaker
	res := b.deliver(t, refs[2])
	if res.Outcome != webhooks.Postpone || res.Delay < 10*time.Second || res.Delay > 12*time.Second {
		t.Fatalf("delivery while open: %+v, want postponed about 10s", res)
	}
	if n := rcv.count.Load(); n != 2 {
		t.Fatalf("the receiver got %d requests, want 2: an open breaker sends nothing", n)
	}
	if d := b.delivery(t, refs[2]); d.AttemptCount != 0 || d.NextAttemptAt == nil {
		t.Fatalf("postponed delivery = %+v, want no attempt spent and a next attempt time", d)
	}

	// Half-open: one probe goes; meanwhile the others keep waiting.
	b.clock.advance(11 * time.Second)
	rcv.answer(nil)
	if res := b.deliver(t, refs[2]); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("probe: %+v, want delivered", res)
	}
	// The probe succeeded: the breaker is closed, due deliveries go.
	b.clock.advance(2 * time.Minute)
	for _, r := range refs[:2] {
		if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("after the probe: %+v, want delivered", res)
		}
	}
}

func TestBreakerLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) {
		o.deliverer.BreakerThreshold = 1
		o.deliverer.BreakerCooldown = 10 * time.Second
	})
	rcv := newReceiver(t)
	release := make(chan struct{})
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		<-release
		w.WriteHeader(http.StatusInternalServerError)
	})
	b.endpoint(t, "acme", rcv.URL)
	_, r0 := b.publish(t, "acme", "")
	_, r1 := b.publish(t, "acme", "")
	_, r2 := b.publish(t, "acme", "")
	close(release)
	b.deliver(t, one(t, r0)) // opens
	b.clock.advance(11 * time.Second)

	// The first delivery after the cooldown probes; the second, while the
	// probe runs, waits.
	release2 := make(chan struct{})
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { <-release2 })
	probe := one(t, r1)
	done := make(chan webhooks.Result, 1)
	go func() {
		res, _ := b.deliverer.Deliver(context.Background(), probe)
		done <- res
	}()
	rcv.next(t) // the first, failed, request
	rcv.next(t) // the probe, now waiting for release2
	if res := b.deliver(t, one(t, r2)); res.Outcome != webhooks.Postpone {
		t.Fatalf("a delivery during the probe: %+v, want postponed", res)
	}
	close(release2)
	if res := <-done; res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("probe: %+v", res)
	}
}

func TestLongFailureDisablesEndpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, func(o *options) {
		o.store.MaxAttempts = 10
		o.deliverer.BreakerThreshold = 1
		o.deliverer.BreakerCooldown = time.Minute
		o.deliverer.DisableAfter = time.Hour
	})
	rcv := newReceiver(t)
	rcv.answer(status(http.StatusBadGateway))
	ep, _ := b.endpoint(t, "acme", rcv.URL)
	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)
	b.deliver(t, r)
	if got, _ := b.store.Endpoint(ctx, "acme", ep.ID); got.FailingSince == nil || got.Status != webhooks.EndpointEnabled {
		t.Fatalf("after one failure: %+v", got)
	}
	b.clock.advance(2 * time.Hour)
	res := b.deliver(t, r)
	if res.Outcome != webhooks.Done || res.Status != webhooks.DeliveryHeld {
		t.Fatalf("failure after DisableAfter: %+v, want held", res)
	}
	got, _ := b.store.Endpoint(ctx, "acme", ep.ID)
	if got.Status != webhooks.EndpointDisabled || !strings.Contains(got.DisabledReason, "every attempt failed for 1h0m0s") {
		t.Fatalf("endpoint = %+v, want disabled with a reason", got)
	}
	// Its undelivered events are kept for when it comes back.
	_, ids, err := b.store.EnableEndpoint(ctx, "acme", ep.ID)
	if err != nil || len(ids) != 1 || ids[0] != r.DeliveryID {
		t.Fatalf("held on enable: %v, %v", ids, err)
	}
	if got, _ := b.store.Endpoint(ctx, "acme", ep.ID); got.FailingSince != nil {
		t.Errorf("enable did not reset the breaker: %+v", got)
	}
}

func TestDeliverToDeletedEndpointFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t)
	ep, _ := b.endpoint(t, "acme", rcv.URL)
	_, refs := b.publish(t, "acme", "")
	if err := b.store.DeleteEndpoint(context.Background(), "acme", ep.ID); err != nil {
		t.Fatal(err)
	}
	r := one(t, refs)
	if res := b.deliver(t, r); res.Outcome != webhooks.Done || res.Status != webhooks.DeliveryFailed {
		t.Fatalf("result = %+v, want done, failed", res)
	}
	if _, err := b.store.PrepareRedelivery(context.Background(), "acme", r.DeliveryID); !errors.Is(err, webhooks.ErrEndpointNotFound) {
		t.Fatalf("redeliver to a deleted endpoint: %v, want ErrEndpointNotFound", err)
	}
	if n := rcv.count.Load(); n != 0 {
		t.Fatalf("the receiver got %d requests", n)
	}
}

// TestDeliverRefusesRebindingAtConnect registers a name that resolves to a
// public address, then points it at the receiver on loopback.
func TestDeliverRefusesRebindingAtConnect(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t)
	dns := newResolver(map[string]string{})
	dns.set("hooks.example.com", "93.184.216.34")
	b := setup(t, func(o *options) {
		o.store.Guard = webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, Resolver: dns})
	})
	port := rcv.URL[strings.LastIndex(rcv.URL, ":")+1:]
	b.endpoint(t, "acme", "http://hooks.example.com:"+port+"/in")
	dns.set("hooks.example.com", "127.0.0.1")

	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)
	res := b.deliver(t, r)
	if res.Outcome != webhooks.Retry || !strings.Contains(res.Err.Error(), "refused at connect: URL not allowed: 127.0.0.1 is a loopback address") {
		t.Fatalf("result = %+v, want a retry refused at connect", res)
	}
	if n := rcv.count.Load(); n != 0 {
		t.Fatalf("the receiver on loopback got %d requests", n)
	}
}

func TestDeliveriesList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	ok := newReceiver(t)
	ep, _ := b.endpoint(t, "acme", ok.URL)
	var ids []string
	for i := range 5 {
		_, refs := b.publish(t, "acme", "")
		r := one(t, refs)
		ids = append(ids, r.DeliveryID)
		if i%2 == 0 {
			b.deliver(t, r)
		}
	}
	page, next, err := b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Limit: 2})
	if err != nil || len(page) != 2 || next == "" || page[0].ID != ids[4] || page[1].ID != ids[3] {
		t.Fatalf("first page = %v (next %q), %v; want the two newest", page, next, err)
	}
	page, next, err = b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Limit: 2, After: next})
	if err != nil || len(page) != 2 || page[0].ID != ids[2] || next == "" {
		t.Fatalf("second page = %v (next %q), %v", page, next, err)
	}
	page, next, err = b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Limit: 2, After: next})
	if err != nil || len(page) != 1 || page[0].ID != ids[0] || next != "" {
		t.Fatalf("last page = %v (next %q), %v", page, next, err)
	}
	delivered, _, err := b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Status: webhooks.DeliveryDelivered})
	if err != nil || len(delivered) != 3 {
		t.Fatalf("delivered = %d, %v; want 3", len(delivered), err)
	}
	for _, d := range delivered {
		if len(d.Attempts) != 1 || d.Attempts[0].StatusCode != 200 {
			t.Errorf("delivered %s: attempts %+v", d.ID, d.Attempts)
		}
	}
	pending, _, err := b.store.Deliveries(ctx, "acme", ep.ID, webhooks.DeliveryListParams{Status: webhooks.DeliveryPending, Limit: 1})
	if err != nil || len(pending) != 1 || pending[0].ID != ids[3] || pending[0].NextAttemptAt == nil {
		t.Fatalf("pending = %+v, %v", pending, err)
	}
}

// TestEndpointSlotsCapDeliveriesInFlight: at most EndpointConcurrency
// attempts to one endpoint are in flight; the next delivery is postponed
// without a request and without spending an attempt, other endpoints and
// the tenant's callbacks have slots of their own, a finished attempt gives
// its slot back, and a slot whose holder vanished (a killed worker) frees
// itself when it expires.
func TestEndpointSlotsCapDeliveriesInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) { o.deliverer.EndpointConcurrency = 2 })
	slow := newReceiver(t)
	release := make(chan struct{})
	var inFlight, most atomic.Int64
	slow.answer(func(w http.ResponseWriter, _ *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
	})
	fast := newReceiver(t)
	b.endpoint(t, "acme", slow.URL)
	var refs []webhooks.Ref
	for range 4 {
		_, r := b.publish(t, "acme", "")
		refs = append(refs, one(t, r))
	}
	results := make(chan webhooks.Result, 2)
	for _, r := range refs[:2] {
		go func() {
			res, err := b.deliverer.Deliver(context.Background(), r)
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	slow.next(t)
	slow.next(t)

	// The third waits in this process for its bound (SlotLocalWait,
	// 50ms by default), no longer, and is postponed.
	start := time.Now()
	res := b.deliver(t, refs[2])
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("the busy delivery was postponed after %s, want it to wait its 50ms for a slot first", waited)
	}
	if res.Outcome != webhooks.Postpone || !errors.Is(res.Err, webhooks.ErrEndpointBusy) || res.Delay < time.Second || res.Delay > 2*time.Second {
		t.Fatalf("a third delivery while two are in flight: %+v, want postponed ~1s as busy", res)
	}
	if d := b.delivery(t, refs[2]); d.AttemptCount != 0 || d.Status != webhooks.DeliveryPending {
		t.Fatalf("the busy delivery: %+v, want pending with no attempt spent", d)
	}
	if n := slow.count.Load(); n != 2 {
		t.Fatalf("the slow receiver got %d requests, want 2", n)
	}

	// Another endpoint and the callback URL are not held up.
	b.endpoint(t, "globex", fast.URL)
	_, other := b.publish(t, "globex", "")
	if res := b.deliver(t, one(t, other)); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("another tenant's endpoint: %+v, want delivered", res)
	}
	_, cb := b.publish(t, "globex", fast.URL+"/cb")
	for _, r := range cb {
		if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("a callback: %+v, want delivered", res)
		}
	}

	// The holders' slots expire (Timeout 5s + 15s) as a killed worker's
	// would: the waiting delivery goes, from another worker process (in
	// this one the holders are still in flight).
	b.clock.advance(21 * time.Second)
	peer, err := webhooks.NewDeliverer(b.store, webhooks.DelivererConfig{EndpointConcurrency: 2, Timeout: 5 * time.Second, Now: b.clock.nowFunc()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Close)
	done := make(chan webhooks.Result, 1)
	go func() {
		res, _ := peer.Deliver(context.Background(), refs[2])
		done <- res
	}()
	slow.next(t)
	close(release)
	for range 2 {
		if res := <-results; res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("a held delivery: %+v, want delivered", res)
		}
	}
	if res := <-done; res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("the delivery that waited: %+v, want delivered", res)
	}
	// Finished attempts gave their slots back.
	if res := b.deliver(t, refs[3]); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("a delivery after the others finished: %+v, want delivered", res)
	}
	if m := most.Load(); m > 3 {
		t.Fatalf("%d requests in flight at once, want at most 3 (2 + 1 after the expiry)", m)
	}
}

// TestBurstToOneEndpointWaitsLocallyNotPostponed: a burst of 200
// deliveries to one fast endpoint, 50 at once as a worker's 50 webhook
// slots would run them, with 4 endpoint slots. Without the local wait
// (SlotLocalWait < 0) deliveries find the Redis slots full and are
// postponed by a second or more; with it none is, every delivery goes on
// its first run, and the endpoint never has more than 4 in flight. The
// bound is generous here so that a loaded machine does not make a slow
// attempt look like a slow endpoint: what is checked is the count of
// postponements, not a time.
func TestBurstToOneEndpointWaitsLocallyNotPostponed(t *testing.T) {
	t.Parallel()
	const events, workers, endpointCap = 200, 50, 4
	for _, tc := range []struct {
		name      string
		localWait time.Duration
	}{{"no-local-wait", -1}, {"local-wait", 10 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(o *options) {
				o.deliverer.EndpointConcurrency = endpointCap
				o.deliverer.SlotLocalWait = tc.localWait
			})
			rcv := newReceiver(t)
			var inFlight, most atomic.Int64
			rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(2 * time.Millisecond) // a fast receiver, not an instant one
			})
			b.endpoint(t, "acme", rcv.URL)
			refs := make(chan webhooks.Ref, events)
			for range events {
				_, r := b.publish(t, "acme", "")
				refs <- one(t, r)
			}
			close(refs)
			var postponed, delivered atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for r := range refs {
						res, err := b.deliverer.Deliver(context.Background(), r)
						switch {
						case err != nil:
							t.Error(err)
						case res.Outcome == webhooks.Postpone:
							if !errors.Is(res.Err, webhooks.ErrEndpointBusy) {
								t.Errorf("postponed: %+v, want busy", res)
							}
							postponed.Add(1)
						case res.Status == webhooks.DeliveryDelivered:
							delivered.Add(1)
						default:
							t.Errorf("delivery: %+v", res)
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%s: %d delivered, %d postponed, at most %d in flight", tc.name, delivered.Load(), postponed.Load(), most.Load())
			if m := most.Load(); m > endpointCap {
				t.Fatalf("%d requests in flight at once, want at most %d", m, endpointCap)
			}
			if tc.localWait < 0 {
				if postponed.Load() == 0 {
					t.Fatalf("no delivery postponed without the local wait: the burst did not fill the endpoint's slots, so the test proves nothing")
				}
				return
			}
			if n := postponed.Load(); n != 0 || delivered.Load() != events {
				t.Fatalf("%d postponed, %d of %d delivered: want every delivery on its first run", n, delivered.Load(), events)
			}
		})
	}
}
