package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/client"
)

// The high-level webhook endpoint methods, against the real server: create,
// list, get, rotate, disable, enable, deliveries, redeliver, delete.
func TestWebhookEndpointMethods(t *testing.T) {
	ctx := ctxFor(t)
	var mu sync.Mutex
	got := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got++
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	c := newClient(t, serverURL)
	desc := "sdk test"
	ep, err := c.CreateWebhookEndpoint(ctx, client.WebhookEndpointRequest{Url: recv.URL + "/hook", Description: &desc,
		Events: &[]client.WebhookEventType{client.WebhookEventTypeOrderExecuted}})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Secret == nil || *ep.Secret == "" || ep.Id == "" {
		t.Fatalf("created %+v", ep)
	}
	t.Cleanup(func() { c.DeleteWebhookEndpoint(ctx, ep.Id) })
	list, err := c.WebhookEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range list {
		found = found || e.Id == ep.Id
	}
	if !found {
		t.Fatalf("endpoint %s not in the list %+v", ep.Id, list)
	}
	rot, err := c.RotateWebhookSecret(ctx, ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Secret == nil || *rot.Secret == *ep.Secret || rot.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotation: %+v", rot)
	}
	dis, err := c.DisableWebhookEndpoint(ctx, ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	if dis.Status != client.Disabled {
		t.Fatalf("disabled endpoint is %s", dis.Status)
	}
	en, err := c.EnableWebhookEndpoint(ctx, ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	if en.Status == client.Disabled {
		t.Fatalf("enabled endpoint is %s", en.Status)
	}
	got1, err := c.GetWebhookEndpoint(ctx, ep.Id)
	if err != nil || got1.Status != en.Status {
		t.Fatalf("get: %+v, %v", got1, err)
	}

	// An executed order is delivered; its delivery can be redelivered.
	o, err := c.PlaceOrder(ctx, marketOrder("acc-sdk-webhooks"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForOrder(ctx, o.Id); err != nil {
		t.Fatal(err)
	}
	var d client.WebhookDelivery
	for d.Status != client.WebhookDeliveryStatusDelivered {
		for dd, err := range c.WebhookDeliveries(ctx, ep.Id, client.DeliveryFilter{}) {
			if err != nil {
				t.Fatal(err)
			}
			d = dd
		}
		if ctx.Err() != nil {
			t.Fatalf("no delivered delivery; last %+v", d)
		}
		time.Sleep(20 * time.Millisecond) // poll: deliveries have no event to wait on
	}
	again, err := c.RedeliverWebhook(ctx, d.Id)
	if err != nil {
		t.Fatal(err)
	}
	if again.Id != d.Id {
		t.Fatalf("redelivered %s, want %s", again.Id, d.Id)
	}
	one, err := c.GetWebhookDelivery(ctx, d.Id)
	if err != nil || one.Id != d.Id {
		t.Fatalf("get delivery: %+v, %v", one, err)
	}
	if err := c.DeleteWebhookEndpoint(ctx, ep.Id); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetWebhookEndpoint(ctx, ep.Id)
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusNotFound {
		t.Fatalf("deleted endpoint: %v, want 404", err)
	}
}
