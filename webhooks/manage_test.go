package webhooks_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

func TestUpdateEndpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	ep, _ := b.endpoint(t, "acme", "http://127.0.0.1:9/old", webhooks.EventOrderFailed)

	// Only the listed types are delivered: order.executed is not yet.
	if _, refs := b.publish(t, "acme", ""); len(refs) != 0 {
		t.Fatalf("order.executed went to an endpoint subscribed to order.failed only: %v", refs)
	}
	url, desc, mps := rcv.URL+"/new", "moved", 5
	events := []string{webhooks.EventOrderExecuted, webhooks.EventOrderFailed, webhooks.EventOrderExecuted}
	got, err := b.store.UpdateEndpoint(ctx, "acme", ep.ID, webhooks.EndpointPatch{URL: &url, Events: &events, Description: &desc, MaxPerSecond: &mps})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != url || got.Description != desc || got.MaxPerSecond != 5 || !slices.Equal(got.Events, []string{"order.executed", "order.failed"}) || !got.UpdatedAt.After(ep.CreatedAt.Add(-time.Millisecond)) {
		t.Fatalf("updated endpoint = %+v", got)
	}
	ev, refs := b.publish(t, "acme", "")
	if res := b.deliver(t, one(t, refs)); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("delivery after the update: %+v", res)
	}
	if h := rcv.next(t); h.header.Get("webhook-id") != ev.ID {
		t.Fatalf("the new URL got %s, want %s", h.header.Get("webhook-id"), ev.ID)
	}

	// A partial patch keeps the rest; max_per_second 0 removes the cap.
	zero := 0
	got, err = b.store.UpdateEndpoint(ctx, "acme", ep.ID, webhooks.EndpointPatch{MaxPerSecond: &zero})
	if err != nil || got.URL != url || got.Description != desc || got.MaxPerSecond != 0 || len(got.Events) != 2 {
		t.Fatalf("partial patch = %+v, %v", got, err)
	}

	bad := "ftp://x"
	none := []string{}
	unknown := []string{"order.lost"}
	big := webhooks.MaxPerSecondLimit + 1
	for name, p := range map[string]webhooks.EndpointPatch{
		"url": {URL: &bad}, "events": {Events: &none}, "unknown event": {Events: &unknown}, "max_per_second": {MaxPerSecond: &big},
	} {
		_, err := b.store.UpdateEndpoint(ctx, "acme", ep.ID, p)
		var v *webhooks.ValidationError
		if !errors.As(err, &v) && !errors.Is(err, webhooks.ErrInvalidURL) && !errors.Is(err, webhooks.ErrURLNotAllowed) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
	if _, err := b.store.UpdateEndpoint(ctx, "globex", ep.ID, webhooks.EndpointPatch{Description: &desc}); !errors.Is(err, webhooks.ErrEndpointNotFound) {
		t.Fatalf("another tenant's update: %v, want not found", err)
	}
	if after, _ := b.store.Endpoint(ctx, "acme", ep.ID); after.MaxPerSecond != 0 || after.URL != url {
		t.Fatalf("a refused patch changed the endpoint: %+v", after)
	}
}

// max_per_second: a burst of mps attempts goes, the next waits its turn
// (postponed, no attempt spent), and goes once the clock moves on.
func TestEndpointMaxPerSecond(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t)
	ep, _ := b.endpoint(t, "acme", rcv.URL+"/in")
	mps := 2
	if _, err := b.store.UpdateEndpoint(context.Background(), "acme", ep.ID, webhooks.EndpointPatch{MaxPerSecond: &mps}); err != nil {
		t.Fatal(err)
	}
	var refs []webhooks.Ref
	for range 3 {
		_, r := b.publish(t, "acme", "")
		refs = append(refs, one(t, r))
	}
	for i, r := range refs[:2] {
		if res := b.deliver(t, r); res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("attempt %d within the cap: %+v", i, res)
		}
	}
	res := b.deliver(t, refs[2])
	if res.Outcome != webhooks.Postpone || !errors.Is(res.Err, webhooks.ErrEndpointRateLimited) || res.Delay <= 0 || res.Delay > time.Second {
		t.Fatalf("third attempt in the same second: %+v, want postponed by at most 1s", res)
	}
	if d := b.delivery(t, refs[2]); d.AttemptCount != 0 {
		t.Fatalf("the postponed delivery spent %d attempts", d.AttemptCount)
	}
	if n := rcv.count.Load(); n != 2 {
		t.Fatalf("receiver got %d requests, want 2", n)
	}
	b.clock.advance(res.Delay)
	if res := b.deliver(t, refs[2]); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("after the wait: %+v", res)
	}
}
