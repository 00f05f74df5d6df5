package webhooks

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// markArchivedScript ends a pending delivery as failed, with the reason;
// a delivery that was delivered, failed or held meanwhile is left alone.
var markArchivedScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'last_error', ARGV[1], 'updated', ARGV[2])
redis.call('HDEL', KEYS[1], 'next')
return 1
`)

// MarkArchived records that the delivery's task went to the dead-letter
// queue while the delivery was still pending: its task ran out of Asynq
// retries (postponements count there), or was archived by an operator or by
// Asynq's recoverer. The delivery becomes failed with reason as its
// LastError, so that the tenant's list says what happened; a redelivery
// makes it pending again. A delivery that is not pending is left alone.
// It reports whether the delivery changed.
func (s *Store) MarkArchived(ctx context.Context, tenant, id, reason string) (bool, error) {
	if !ValidDeliveryID(id) {
		return false, ErrDeliveryNotFound
	}
	if reason == "" {
		reason = "moved to the dead-letter queue"
	}
	n, err := markArchivedScript.Run(ctx, s.rdb, []string{s.k.delivery(tenant, id)}, reason, s.cfg.Now().UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("mark delivery archived: %w", err)
	}
	return n == 1, nil
}

// Overdue reports whether a pending delivery's next attempt is more than
// grace past: its task is late, lost or archived.
func (d *Delivery) Overdue(now time.Time, grace time.Duration) bool {
	return d.Status == DeliveryPending && d.NextAttemptAt != nil && now.Sub(*d.NextAttemptAt) > grace
}
