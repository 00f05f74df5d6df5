package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCluster starts three masters, writes keys of 30 hash tags through a
// cluster client made from URL, and checks that the harness finds each key on
// the master that owns its slot and counts the keys on each master.
func TestCluster(t *testing.T) {
	c := StartCluster(t, ClusterOptions{Masters: 3})
	if n := len(c.Masters()); n != 3 {
		t.Fatalf("%d masters, want 3", n)
	}
	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatalf("URL %s: %v", c.URL(), err)
	}
	if len(opt.Addrs) != 3 {
		t.Fatalf("URL %s names %d addresses, want 3", c.URL(), len(opt.Addrs))
	}
	cc := redis.NewClusterClient(opt)
	defer cc.Close()
	ctx := context.Background()
	where := make(map[string]int)
	for i := range 30 {
		key := fmt.Sprintf("t:{tenant%d}:a", i)
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		// Two keys of one tag: a MULTI over both works only in one slot.
		if _, err := cc.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, fmt.Sprintf("t:{tenant%d}:b", i))
			p.Incr(ctx, fmt.Sprintf("u:{tenant%d}", i))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		m, err := c.MasterOf(key)
		if err != nil {
			t.Fatal(err)
		}
		where[m.Addr()] += 3
	}
	per, err := c.KeysPerMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("keys per master: %v", per)
	for _, m := range c.Masters() {
		if per[m.Addr()] == 0 || per[m.Addr()] != where[m.Addr()] {
			t.Errorf("master %s holds %d keys, MasterOf put %d there", m.Addr(), per[m.Addr()], where[m.Addr()])
		}
	}
	// A PUBLISH from a script on any master reaches a subscriber wherever
	// the cluster client subscribed (the order and feed watchers rely on it).
	sub := cc.Subscribe(ctx, "ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		key := fmt.Sprintf("t:{tenant%d}:a", i)
		if err := cc.Eval(ctx, "redis.call('PUBLISH', 'ch', ARGV[1]) return 1", []string{key}, key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got := make(map[string]bool) // messages through other masters may come in another order
	for i := range 30 {
		select {
		case m := <-sub.Channel():
			got[m.Payload] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 30 messages published from scripts arrived", i)
		}
	}
	for i := range 30 {
		if key := fmt.Sprintf("t:{tenant%d}:a", i); !got[key] {
			t.Errorf("the message published on %s's master did not arrive", key)
		}
	}
	count, err := c.CountKeys(ctx, "t:*")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range count {
		total += n
	}
	if total != 60 {
		t.Errorf("CountKeys(t:*) = %v, %d in all, want 60", count, total)
	}
}

// TestClusterFailover kills a master of a cluster with a replica per master:
// WaitHealthy returns once the replica has taken its slots, Masters names the
// new one, and an acknowledged key (WAIT 1) survives.
func TestClusterFailover(t *testing.T) {
	c := StartCluster(t, ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	if len(c.Nodes()) != 6 || len(c.Masters()) != 3 || len(c.Replicas()) != 3 {
		t.Fatalf("%d nodes, %d masters, %d replicas; want 6, 3, 3", len(c.Nodes()), len(c.Masters()), len(c.Replicas()))
	}
	ctx := context.Background()
	cc := c.NewClient(t)
	const key = "k:{failover}"
	victim, err := c.MasterOf(key)
	if err != nil {
		t.Fatal(err)
	}
	rs := c.ReplicasOf(victim)
	if len(rs) != 1 {
		t.Fatalf("master %s has %d replicas, want 1", victim.Addr(), len(rs))
	}
	mc, err := cc.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := mc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}
	start := time.Now()
	victim.Kill()
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover in %s", time.Since(start).Round(time.Millisecond))
	now, err := c.MasterOf(key)
	if err != nil {
		t.Fatal(err)
	}
	if now != rs[0] {
		t.Errorf("after the kill %s serves the key, want its replica %s", now.Addr(), rs[0].Addr())
	}
	cc.ReloadState(ctx) // a client learns of a failover lazily, from an error or MOVED
	if got, err := cc.Get(ctx, key).Result(); err != nil || got != "v" {
		t.Errorf("after the failover GET = %q, %v; want v", got, err)
	}
	// The old master comes back as a replica of the new one.
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := c.ReplicasOf(now); len(got) != 1 || got[0] != victim {
		t.Errorf("after the restart %s has replicas %v, want the old master %s", now.Addr(), got, victim.Addr())
	}
}

// Slot agrees with CLUSTER KEYSLOT, hash tags included.
func TestSlot(t *testing.T) {
	s := Start(t, Options{Cluster: true, Databases: 1})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx := context.Background()
	for i := range 1000 {
		for _, key := range []string{fmt.Sprint("k", i), fmt.Sprintf("ag:{t%d}:o:x", i), fmt.Sprintf("a{}b%d", i), fmt.Sprintf("a{%d}}", i), fmt.Sprintf("{%d", i)} {
			want, err := c.ClusterKeySlot(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := Slot(key); int64(got) != want {
				t.Fatalf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, want)
			}
		}
	}
}

// recorder is a testing.TB that keeps its errors and runs its cleanups on demand.
type recorder struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper()                      {}
func (r *recorder) Cleanup(f func())             { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, args ...any) { r.errs = append(r.errs, fmt.Sprintf(f, args...)) }

// CheckSlots reports a script and a MULTI across slots, and nothing for
// those in one slot or a plain pipeline across slots.
func TestCheckSlots(t *testing.T) {
	c := Shared(t).NewClient(t)
	r := &recorder{TB: t}
	CheckSlots(r, c)
	ctx := context.Background()
	script := redis.NewScript(`return #KEYS`)
	script.Run(ctx, c, []string{"a:{x}:1", "a:{x}:2"})
	script.Run(ctx, c, []string{"a:{x}:1", "a:{y}:2"}) // reported
	c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "b:{x}", 1, 0)
		p.Incr(ctx, "c:{x}")
		return nil
	})
	c.TxPipelined(ctx, func(p redis.Pipeliner) error { // reported
		p.Set(ctx, "b:{x}", 1, 0)
		p.Incr(ctx, "c:{y}")
		return nil
	})
	c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "b:{x}", 1, 0)
		p.Incr(ctx, "c:{y}")
		return nil
	})
	for _, f := range r.cleanups {
		f()
	}
	if len(r.errs) != 2 || !strings.Contains(r.errs[0], "EVALSHA: [a:{x}:1 a:{y}:2]") || !strings.Contains(r.errs[1], "MULTI: [b:{x} c:{y}]") {
		t.Errorf("reports %q, want the script and the MULTI across slots", r.errs)
	}
}
