package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/webhooks"
)

// FeedEvents reads the feed to its end; FollowEvents then long-polls and
// yields the event of an order that ends later, with its raw bytes and a
// cursor to resume from.
func TestEventFeedMethods(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	cursor := ""
	n := 0
	for ev, err := range c.FeedEvents(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.Raw) == 0 || ev.Event.Id == "" {
			t.Fatalf("feed event %+v", ev)
		}
		// Inside a page the cursor is the one before the page ("" on the
		// first); the last event of a page carries the page's next.
		cursor = ev.Cursor
		n++
	}
	_, end, err := c.EventPage(ctx, cursor, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if end == "" {
		t.Fatal("no cursor at the feed's end")
	}

	o, err := c.PlaceOrder(ctx, marketOrder("acc-sdk-feed"))
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var got client.FeedEvent
	for ev, err := range c.FollowEvents(fctx, end) {
		if err != nil {
			t.Fatalf("follow: %v (after %d events of other tests)", err, n)
		}
		if ev.Event.Data.Id == o.Id {
			got = ev
			break
		}
	}
	done, err := c.WaitForOrder(ctx, o.Id)
	if err != nil {
		t.Fatal(err)
	}
	if want := webhooks.EventID("acme", o.Id.String(), done.Version); got.Event.Id != want {
		t.Fatalf("followed event %s, want %s", got.Event.Id, want)
	}
	// Resuming from its cursor does not yield it again.
	evs, _, err := c.EventPage(ctx, got.Cursor, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Event.Id == got.Event.Id && got.Cursor != end {
			t.Fatalf("event %s read again after its cursor", ev.Event.Id)
		}
	}
	if _, _, err := c.EventPage(ctx, "not-a-cursor", 0, 0); err == nil {
		t.Fatal("a bad cursor was accepted")
	} else if p, ok := err.(*client.Problem); !ok || p.Status != 422 {
		t.Fatalf("bad cursor: %v, want a 422 problem", err)
	}
}

func TestUpdateWebhookEndpointAndEventTypes(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	ep, err := c.CreateWebhookEndpoint(ctx, client.WebhookEndpointRequest{Url: "http://127.0.0.1:9/sdk-patch"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteWebhookEndpoint(ctx, ep.Id) })
	desc, mps := "patched", 7
	events := []client.WebhookEventType{client.WebhookEventTypeOrderFailed}
	got, err := c.UpdateWebhookEndpoint(ctx, ep.Id, client.WebhookEndpointPatch{Description: &desc, MaxPerSecond: &mps, Events: &events})
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != desc || got.MaxPerSecond == nil || *got.MaxPerSecond != 7 || len(got.Events) != 1 || got.Events[0] != client.WebhookEventTypeOrderFailed {
		t.Fatalf("patched: %+v", got)
	}
	bad := -1
	if _, err := c.UpdateWebhookEndpoint(ctx, ep.Id, client.WebhookEndpointPatch{MaxPerSecond: &bad}); err == nil {
		t.Fatal("max_per_second -1 accepted")
	}
	types, err := c.EventTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(types) != 4 || types[0].Type != client.WebhookEventTypeOrderExecuted || types[0].Schema["$defs"] == nil {
		t.Fatalf("event types: %+v", types)
	}
}

func TestTestWebhookEndpoint(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	ep, err := c.CreateWebhookEndpoint(ctx, client.WebhookEndpointRequest{Url: "http://127.0.0.1:9/sdk-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteWebhookEndpoint(ctx, ep.Id) })
	res, err := c.TestWebhookEndpoint(ctx, ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	if res.Success || res.LikelyCause == nil || res.LikelyCause.Code != client.WebhookTestCauseCodeConnectionRefused {
		t.Fatalf("test of a closed port: %+v", res)
	}
}

func TestRecoverWebhookEndpoint(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	ep, err := c.CreateWebhookEndpoint(ctx, client.WebhookEndpointRequest{Url: "http://127.0.0.1:9/sdk-recover"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteWebhookEndpoint(ctx, ep.Id) })
	rec, err := c.RecoverWebhookEndpoint(ctx, ep.Id, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rec.Status != client.WebhookRecoveryStatusDone {
		if time.Now().After(deadline) {
			t.Fatalf("recovery still %s", rec.Status)
		}
		time.Sleep(50 * time.Millisecond) // polling the recovery's progress
		if rec, err = c.GetWebhookRecovery(ctx, rec.Id); err != nil {
			t.Fatal(err)
		}
	}
	if rec.Total != 0 || rec.EndpointId != ep.Id {
		t.Fatalf("recovery of an endpoint without failures: %+v", rec)
	}
}
