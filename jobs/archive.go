package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/webhooks"
)

// A delivery's task can reach the dead-letter queue while the delivery is
// still pending: Asynq counts postponements (an open breaker) against its
// retry cap, an operator can archive the task from the dashboard, and
// Asynq's recoverer archives a task of a dead worker that had no retries
// left. The delivery record would then say "pending" for ever. The
// notifier marks such deliveries failed (webhooks.Store.MarkArchived): at
// once when its handler returns the error of the task's last run, and,
// for the other cases, when the tenant reads a pending delivery whose next
// attempt is overdue and finds its task archived.

// overdueGrace is how late a pending delivery's attempt must be before a
// read asks Asynq about its task.
const overdueGrace = 5 * time.Second

// lastRun reports whether the task running in ctx is on its last retry:
// an error now sends it to the archive.
func lastRun(ctx context.Context) bool {
	retried, ok1 := asynq.GetRetryCount(ctx)
	limit, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= limit
}

// archived marks r's delivery failed when its task is about to be archived
// with err; it returns err.
func (n *Notifier) archived(ctx context.Context, r webhooks.Ref, err error) error {
	if err == nil || !lastRun(ctx) {
		return err
	}
	reason := fmt.Sprintf("moved to the dead-letter queue after %d task runs: %v", n.cfg.DeliverMaxRetry+1, err)
	if _, merr := n.hooks.MarkArchived(context.WithoutCancel(ctx), r.Tenant, r.DeliveryID, reason); merr != nil {
		n.log.WarnContext(ctx, "mark an archived delivery failed", "delivery_id", r.DeliveryID, "tenant", r.Tenant, "err", merr)
	}
	return err
}

// Delivery returns the tenant's delivery as webhooks.Store.Delivery does,
// failed if its task was archived while it was pending.
func (n *Notifier) Delivery(ctx context.Context, tenant, id string) (*webhooks.Delivery, error) {
	d, err := n.hooks.Delivery(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if err := n.checkArchived(ctx, tenant, d); err != nil {
		return nil, err
	}
	return d, nil
}

// Deliveries lists an endpoint's deliveries as webhooks.Store.Deliveries
// does, showing as failed those whose task was archived while they were
// pending.
func (n *Notifier) Deliveries(ctx context.Context, tenant, endpointID string, p webhooks.DeliveryListParams) ([]*webhooks.Delivery, string, error) {
	ds, next, err := n.hooks.Deliveries(ctx, tenant, endpointID, p)
	if err != nil {
		return nil, "", err
	}
	out := ds[:0]
	for _, d := range ds {
		if err := n.checkArchived(ctx, tenant, d); err != nil {
			return nil, "", err
		}
		if p.Status == "" || d.Status == p.Status {
			out = append(out, d)
		}
	}
	return out, next, nil
}

// checkArchived looks up the task of an overdue pending delivery and, when
// it is archived, marks the delivery failed (in d too).
func (n *Notifier) checkArchived(ctx context.Context, tenant string, d *webhooks.Delivery) error {
	if !d.Overdue(time.Now(), overdueGrace) {
		return nil
	}
	info, err := n.insp.GetTaskInfo(n.DeliveryQueue(d.ID), d.ID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up the task of delivery %s: %w", d.ID, err)
	}
	if info.State != asynq.TaskStateArchived {
		return nil
	}
	reason := "moved to the dead-letter queue"
	if info.LastErr != "" {
		reason += ": " + info.LastErr
	}
	changed, err := n.hooks.MarkArchived(ctx, tenant, d.ID, reason)
	if err != nil {
		return err
	}
	if changed {
		d.Status, d.LastError, d.NextAttemptAt = webhooks.DeliveryFailed, reason, nil
	}
	return nil
}
