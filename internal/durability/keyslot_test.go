package durability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redisslot"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// redisslot.Of agrees with Redis's CLUSTER KEYSLOT on a node with cluster support.
func TestKeySlot(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{Cluster: true, Databases: 1})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx := context.Background()
	for i := range 2000 {
		tag := fmt.Sprint(i)
		want, err := c.ClusterKeySlot(ctx, Key+":{"+tag+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redisslot.Of(tag); int64(got) != want {
			t.Fatalf("redisslot.Of(%q) = %d, CLUSTER KEYSLOT says %d", tag, got, want)
		}
	}
}

// After the slot of a master's barrier key moves to another master (as in a
// resharding), the barrier's SET there answers MOVED: Sync finds the keys
// again and passes, with a key of a slot the first master still serves.
func TestClusterBarrierAfterSlotMoved(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	ctx := context.Background()
	cc := c.NewClient(t)
	// WAIT 0 answers at once: this test is about where the SET goes.
	b := &Barrier{method: WaitReplicas, rdb: cc, n: 0, timeout: time.Second, keys: &clusterKeys{cc: cc}}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	from, to := c.Masters()[0], c.Masters()[1]
	old := b.keys.by[from.Addr()]
	tag := old[strings.Index(old, "{")+1 : strings.Index(old, "}")]
	slot := redisslot.Of(tag)

	// Move the slot from one master to the other, key and all.
	client := func(s *redistest.Server) *redis.Client {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	src, dst := client(from), client(to)
	srcID, dstID := src.Do(ctx, "CLUSTER", "MYID").Val(), dst.Do(ctx, "CLUSTER", "MYID").Val()
	host, port, _ := strings.Cut(to.Addr(), ":")
	for _, step := range []struct {
		c    *redis.Client
		args []any
	}{
		{dst, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", srcID}},
		{src, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", dstID}},
		{src, []any{"MIGRATE", host, port, "", 0, 5000, "KEYS", old}},
		{dst, []any{"CLUSTER", "SETSLOT", slot, "NODE", dstID}},
		{src, []any{"CLUSTER", "SETSLOT", slot, "NODE", dstID}},
	} {
		if err := step.c.Do(ctx, step.args...).Err(); err != nil {
			t.Fatalf("%v: %v", step.args, err)
		}
	}
	for _, m := range c.Masters() {
		if m != from && m != to {
			if err := client(m).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := src.Set(ctx, old, "1", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Fatalf("SET %s on %s after the move: %v, want MOVED", old, from.Addr(), err)
	}

	if err := b.Sync(ctx); err != nil {
		t.Fatalf("Sync after the slot moved: %v", err)
	}
	now := b.keys.by[from.Addr()]
	if now == "" || now == old {
		t.Fatalf("the barrier key of %s is %q after its slot moved, was %q", from.Addr(), now, old)
	}
	if m, err := c.MasterOf(now); err != nil || m != from {
		t.Errorf("the new barrier key %s of %s is served by %v (%v)", now, from.Addr(), m, err)
	}
}
