package app_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/webhooks"
)

// A manual redelivery while the endpoint's breaker is open goes at once, as
// the breaker's probe, and its success closes the breaker: the endpoint's
// next event is delivered without waiting out the cool-down.
func TestWebhookManualRedeliveryProbesOpenBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Webhooks.Deliverer.BreakerThreshold = 2
		c.Webhooks.Deliverer.BreakerCooldown, c.Webhooks.Deliverer.BreakerMaxCooldown = time.Hour, time.Hour
	})
	a := b.api(t)
	rcv := newHookReceiver(t)
	var ok atomic.Bool
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		if !ok.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())
	d := a.onlyDelivery(apiKey, ep.ID, "two failed attempts, the breaker open for an hour", func(d webhooks.Delivery) bool {
		return d.AttemptCount == 2 && d.Status == webhooks.DeliveryPending && d.NextAttemptAt != nil && time.Until(*d.NextAttemptAt) > 30*time.Minute
	})

	ok.Store(true) // the receiver is fixed; its owner redelivers from the dashboard
	a.must(http.StatusAccepted, "POST", "/v1/webhook-deliveries/"+d.ID+"/retry", apiKey, nil, nil)
	d = a.onlyDelivery(apiKey, ep.ID, "delivered by the redelivery", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	equal(t, "attempts", d.AttemptCount, 3)
	var got webhooks.Endpoint
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, &got)
	if got.FailingSince != nil {
		t.Errorf("the endpoint still fails since %v after a successful redelivery", got.FailingSince)
	}
	// The breaker is closed: the next event goes at once.
	b.place(t, order())
	pollUntil(t, 30*time.Second, "the next event delivered", func() bool {
		list := a.deliveries(apiKey, ep.ID, "?status=delivered")
		return len(list) == 2
	})
}

// A delivery whose task goes to the dead-letter queue while the delivery
// is pending (here: Asynq's retry cap, which postponements by the open
// breaker count against) shows as failed, with why, not pending for ever.
func TestWebhookArchivedDeliveryShowsFailed(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Webhooks.Store.MaxAttempts = 50
		c.Webhooks.Deliverer.BreakerThreshold = 1
		c.Webhooks.Deliverer.BreakerCooldown, c.Webhooks.Deliverer.BreakerMaxCooldown = time.Second, time.Second
		c.Webhooks.Notifier.DeliverMaxRetry = 2
	})
	a := b.api(t)
	rcv := newHookReceiver(t)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())

	var d webhooks.Delivery
	pollUntil(t, 30*time.Second, "the delivery's task archived", func() bool {
		list := a.deliveries(apiKey, ep.ID, "")
		if len(list) != 1 {
			return false
		}
		d = list[0]
		info, err := b.app.Inspector().GetTaskInfo(b.app.Notifier.DeliveryQueue(d.ID), d.ID)
		return err == nil && info.State == asynq.TaskStateArchived
	})
	d = a.onlyDelivery(apiKey, ep.ID, "failed", func(d webhooks.Delivery) bool { return d.Status != webhooks.DeliveryPending })
	equal(t, "status", d.Status, webhooks.DeliveryFailed)
	if !strings.Contains(d.LastError, "dead-letter queue") || d.NextAttemptAt != nil {
		t.Errorf("last_error %q, next_attempt_at %v", d.LastError, d.NextAttemptAt)
	}
	if failed := a.deliveries(apiKey, ep.ID, "?status=failed"); len(failed) != 1 {
		t.Errorf("?status=failed lists %d deliveries", len(failed))
	}
}
