package orders

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The outbox is how an order's end reaches the webhooks exactly once and
// durably. The script of a terminal Transition adds the order to its
// tenant's outbox; whoever turns the end into a webhook event (the fan-out)
// removes it with OutboxDone once the event and its deliveries are stored
// and scheduled. An entry that stays longer than expected means the fast
// path was lost (a crash between the transition and the fan-out): the
// reconciler finds it with Outbox and fans it out again.

// Outbox returns up to limit ids of the tenant's ended orders whose webhook
// event is not yet fanned out, recorded before the given time, oldest first.
func (s *Store) Outbox(ctx context.Context, tenant string, before time.Time, limit int) ([]string, error) {
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.k.outbox(tenant), Start: "-inf", Stop: strconv.FormatInt(before.UnixMilli(), 10),
		ByScore: true, Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return ids, nil
}

// OutboxDone removes the order from the tenant's outbox: its webhook event
// has been fanned out. Removing an absent entry is no error.
func (s *Store) OutboxDone(ctx context.Context, tenant, id string) error {
	if err := s.rdb.ZRem(ctx, s.k.outbox(tenant), id).Err(); err != nil {
		return fmt.Errorf("outbox done: %w", err)
	}
	return nil
}

// OutboxKey is the Redis key of the tenant's outbox, for scripts of other
// packages that must remove an entry atomically with a check of their own.
func (s *Store) OutboxKey(tenant string) string { return s.k.outbox(tenant) }
