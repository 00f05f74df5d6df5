package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
)

// A pass whose lock release failed (its master was down when the pass
// ended) leaves the lock with the reconciler's token: the same reconciler
// takes it again on its next pass and releases it, where it used to hold
// every pass off for the lock's TTL (3 × Interval + 1 min; decision 86).
// Another reconciler still waits for it.
func TestReconcilerRetakesItsOwnStaleLock(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	store := orders.NewStore(rdb, orders.StoreConfig{})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	client := asynq.NewClientFromRedisClient(rdb)
	enq := NewEnqueuer(client, EnqueuerConfig{})
	ctx := context.Background()
	r := NewReconciler(store, insp, enq, ReconcilerConfig{})
	other := NewReconciler(store, insp, enq, ReconcilerConfig{})
	key := r.cfg.LockKey
	if err := rdb.Set(ctx, key, r.token, time.Hour).Err(); err != nil { // the release that failed
		t.Fatal(err)
	}
	if _, ran, err := other.RunLocked(ctx); err != nil || ran {
		t.Fatalf("another reconciler ran a pass under r's lock: ran=%v err=%v", ran, err)
	}
	if _, ran, err := r.RunLocked(ctx); err != nil || !ran {
		t.Fatalf("r did not take its own stale lock: ran=%v err=%v", ran, err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Fatalf("the lock is still held after r's pass")
	}
	if _, ran, err := other.RunLocked(ctx); err != nil || !ran {
		t.Fatalf("the other reconciler could not run once the lock was released: ran=%v err=%v", ran, err)
	}
}
