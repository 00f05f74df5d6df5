package app

import (
	"context"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// WebhooksConfig configures the webhook parts.
type WebhooksConfig struct {
	// Guard says where webhooks may go (https and public addresses only, by
	// default); it checks endpoint URLs at registration and every connect.
	Guard webhooks.GuardConfig
	// Store configures the endpoint, event and delivery store; its Guard is
	// built from Guard above.
	Store webhooks.StoreConfig
	// Deliverer configures the attempts: timeout, retry schedule, breaker.
	Deliverer webhooks.DelivererConfig
	// Notifier configures the fan-out and delivery tasks.
	Notifier jobs.NotifierConfig
}

// newWebhooks builds the webhook store, deliverer and notifier. The API
// uses the store and the notifier (redeliveries); the worker runs the
// notifier's tasks.
func (a *App) newWebhooks() error {
	wc := a.cfg.Webhooks
	guard := webhooks.NewGuard(wc.Guard)
	sc := wc.Store
	sc.Guard = guard
	if sc.Prefix == "" {
		sc.Prefix = a.cfg.Store.Prefix // the orders' prefix, so that one tenant's keys share a slot
	}
	a.Webhooks = webhooks.NewStore(a.cfg.Redis, sc)
	dc := wc.Deliverer
	dc.Guard = guard
	if dc.Logger == nil {
		dc.Logger = a.cfg.Logger
	}
	d, err := webhooks.NewDeliverer(a.Webhooks, dc)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	a.deliverer = d
	nc := wc.Notifier
	if nc.Logger == nil {
		nc.Logger = a.cfg.Logger
	}
	a.Notifier = jobs.NewNotifier(a.Store, a.Webhooks, d, a.client, asynq.NewInspectorFromRedisClient(a.cfg.Redis), nc)
	return nil
}

// onTerminal chains the notifier's fast path after the configured hook.
func (a *App) onTerminal(next func(context.Context, *orders.Order)) func(context.Context, *orders.Order) {
	return func(ctx context.Context, o *orders.Order) {
		if next != nil {
			next(ctx, o)
		}
		a.Notifier.OnTerminal(ctx, o)
	}
}

// tenantDeliveries is the webhook store as the API uses it, but for its
// deliveries, which the notifier reads: a pending delivery whose task was
// archived shows as failed.
type tenantDeliveries struct {
	*webhooks.Store
	n *jobs.Notifier
}

func (t tenantDeliveries) Delivery(ctx context.Context, tenant, id string) (*webhooks.Delivery, error) {
	return t.n.Delivery(ctx, tenant, id)
}

func (t tenantDeliveries) Deliveries(ctx context.Context, tenant, endpointID string, p webhooks.DeliveryListParams) ([]*webhooks.Delivery, string, error) {
	return t.n.Deliveries(ctx, tenant, endpointID, p)
}
