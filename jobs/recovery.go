package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/webhooks"
)

// TypeWebhookRecover redelivers an endpoint's failed deliveries since a
// time (a webhooks.Recovery), on its endpoint's shard of QueueWebhooks. TaskID: the recovery id.
const TypeWebhookRecover = "webhook:recover"

// maxRecover bounds the deliveries one recovery looks at.
const maxRecover = 10000

type recoverPayload struct {
	Tenant string `json:"t"`
	ID     string `json:"id"`
}

// StartRecovery records a recovery of the endpoint's failed deliveries
// made since since and enqueues its task. webhooks.ErrEndpointNotFound,
// webhooks.ErrEndpointDisabled (enable it first: that redelivers what it
// held).
func (n *Notifier) StartRecovery(ctx context.Context, tenant, endpointID string, since time.Time) (*webhooks.Recovery, error) {
	ep, err := n.hooks.Endpoint(ctx, tenant, endpointID)
	if err != nil {
		return nil, err
	}
	if ep.Status == webhooks.EndpointDisabled {
		return nil, webhooks.ErrEndpointDisabled
	}
	rec, err := n.hooks.CreateRecovery(ctx, tenant, endpointID, since)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(recoverPayload{tenant, rec.ID})
	t := asynq.NewTaskWithHeaders(TypeWebhookRecover, b, traceHeaders(ctx, nil), asynq.TaskID(rec.ID), asynq.Queue(QueueFor(QueueWebhooks, endpointID, n.cfg.Shards)),
		asynq.MaxRetry(n.cfg.FanoutMaxRetry), asynq.Timeout(10*time.Minute))
	if err := enqueue(ctx, n.client, t); err != nil {
		return nil, err
	}
	return rec, nil
}

// Recovery returns the tenant's recovery. webhooks.ErrRecoveryNotFound.
func (n *Notifier) Recovery(ctx context.Context, tenant, id string) (*webhooks.Recovery, error) {
	return n.hooks.Recovery(ctx, tenant, id)
}

// RecoverTask is the webhook:recover handler: it redelivers the endpoint's
// failed deliveries since the recovery's time, oldest first, counting its
// progress. A retried run finds the ones already redelivered pending or
// delivered, and goes on with the rest.
func (n *Notifier) RecoverTask(ctx context.Context, t *asynq.Task) error {
	var p recoverPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Tenant == "" || p.ID == "" {
		return fmt.Errorf("decode %s payload: %w", t.Type(), errors.Join(err, asynq.SkipRetry))
	}
	rec, err := n.hooks.Recovery(ctx, p.Tenant, p.ID)
	if errors.Is(err, webhooks.ErrRecoveryNotFound) {
		return nil // expired
	}
	if err != nil {
		return err
	}
	if rec.Status == webhooks.RecoveryDone || rec.Status == webhooks.RecoveryFailed {
		return nil
	}
	ds, err := n.hooks.DeliveriesSince(ctx, p.Tenant, rec.EndpointID, rec.Since, maxRecover)
	if err != nil {
		return err
	}
	var failed []string
	for _, d := range ds {
		if err := n.checkArchived(ctx, p.Tenant, d); err != nil {
			return err
		}
		if d.Status == webhooks.DeliveryFailed {
			failed = append(failed, d.ID)
		}
	}
	if err := n.hooks.RecoveryProgress(ctx, p.Tenant, p.ID, webhooks.RecoveryRunning, "", rec.Redelivered+rec.Skipped+len(failed), 0, 0); err != nil {
		return err
	}
	for _, id := range failed {
		_, err := n.Redeliver(ctx, p.Tenant, id)
		switch {
		case errors.Is(err, webhooks.ErrDeliveryNotFound):
			err = n.hooks.RecoveryProgress(ctx, p.Tenant, p.ID, webhooks.RecoveryRunning, "", 0, 0, 1)
		case errors.Is(err, webhooks.ErrEndpointNotFound), errors.Is(err, webhooks.ErrEndpointDisabled):
			return n.hooks.RecoveryProgress(ctx, p.Tenant, p.ID, webhooks.RecoveryFailed, "stopped: "+err.Error(), 0, 0, 0)
		case err != nil:
			return err
		default:
			err = n.hooks.RecoveryProgress(ctx, p.Tenant, p.ID, webhooks.RecoveryRunning, "", 0, 1, 0)
		}
		if err != nil {
			return err
		}
	}
	return n.hooks.RecoveryProgress(ctx, p.Tenant, p.ID, webhooks.RecoveryDone, "", 0, 0, 0)
}
