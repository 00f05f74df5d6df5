package orders_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
)

// probeRider, in the create's pipeline, reads whether the order exists
// (so it ran after the create script) and writes a key of its own slot
// with a script, so that the NOSCRIPT path has a script of the rider's to
// send again.
type probeRider struct {
	orderKey string
	queued   []bool // eval of each Queue
	exists   *redis.IntCmd
	write    *redis.Cmd
	settled  []bool // undo of each Settle
}

var riderScript = redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1])`)

func (r *probeRider) Queue(ctx context.Context, p redis.Pipeliner, eval bool) {
	r.queued = append(r.queued, eval)
	r.exists = p.Exists(ctx, r.orderKey)
	if eval {
		r.write = riderScript.Eval(ctx, p, []string{"rider:{x}"}, "1")
	} else {
		r.write = riderScript.EvalSha(ctx, p, []string{"rider:{x}"}, "1")
	}
}

func (r *probeRider) Settle(_ context.Context, undo bool) error {
	r.settled = append(r.settled, undo)
	if r.write == nil {
		return errors.New("not sent")
	}
	return r.write.Err()
}

// TestCreateRiding: the rider's commands go in the create's pipeline, after
// the script (the order exists when they run), in one round trip; a
// duplicate client_order_id settles the rider with undo; after a
// SCRIPT FLUSH the pipeline goes again with the scripts' text, once.
func TestCreateRiding(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Shared(t).NewClient(t)
	redistest.CheckSlots(t, rdb)
	var rt redistest.RoundTrips
	rdb.AddHook(&rt)
	s := orders.NewStore(rdb, orders.StoreConfig{})
	newOrder(t, s, "acme") // the tenant registered: its SADD is not counted below
	if err := riderScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	// A pipeline first: the connection it opens (HELLO and CLIENT SETINFO)
	// is not counted below.
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() }); err != nil {
		t.Fatal(err)
	}

	o := bindOrder("acme")
	o.ClientOrderID = "ride-1"
	r := &probeRider{orderKey: "ag:{acme}:o:" + o.ID}
	before := rt.Snapshot()
	created, _, rideErr, err := s.CreateRiding(ctx, o, orders.Binding{}, r)
	if err != nil || rideErr != nil || created == nil {
		t.Fatalf("create: err %v, rider %v", err, rideErr)
	}
	if n := rt.Snapshot().Since(before); n.All != 1 {
		t.Errorf("create and rider took %d round trips, want 1: %s", n.All, n.Breakdown(1))
	}
	if r.exists.Val() != 1 {
		t.Errorf("the rider ran before the create: the order did not exist (key %s)", r.orderKey)
	}
	if len(r.settled) != 1 || r.settled[0] {
		t.Errorf("settled %v, want once, kept", r.settled)
	}

	dup := bindOrder("acme")
	dup.ClientOrderID = "ride-1"
	r = &probeRider{orderKey: "ag:{acme}:o:" + dup.ID}
	if existing, _, _, err := s.CreateRiding(ctx, dup, orders.Binding{}, r); !errors.Is(err, orders.ErrDuplicateClientOrderID) || existing.ID != o.ID {
		t.Fatalf("duplicate: %v, %+v", err, existing)
	}
	if len(r.settled) != 1 || !r.settled[0] {
		t.Errorf("duplicate settled %v, want once, undone", r.settled)
	}

	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	o3 := bindOrder("acme")
	r = &probeRider{orderKey: "ag:{acme}:o:" + o3.ID}
	if _, _, rideErr, err := s.CreateRiding(ctx, o3, orders.Binding{}, r); err != nil || rideErr != nil {
		t.Fatalf("create after SCRIPT FLUSH: err %v, rider %v", err, rideErr)
	}
	if len(r.queued) != 2 || r.queued[0] || !r.queued[1] {
		t.Errorf("after SCRIPT FLUSH the rider was queued %v, want EVALSHA then EVAL", r.queued)
	}
	if _, err := s.Get(ctx, "acme", o3.ID); err != nil {
		t.Errorf("order after SCRIPT FLUSH: %v", err)
	}
}
