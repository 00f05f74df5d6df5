package jobs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

// TestWorkerWaitsForWorkOnlyOnAOneServerClient: the wait for work needs a
// client of its own for the Asynq servers, which only a plain client gives
// safely; a Sentinel client's clone would keep talking to a demoted master.
func TestWorkerWaitsForWorkOnlyOnAOneServerClient(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { plain.Close() })
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { failover.Close() })
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		cfg  WorkerConfig
		wait bool
	}{
		{"plain client", plain, WorkerConfig{}, true},
		{"plain client, IdleWait negative", plain, WorkerConfig{IdleWait: -1}, false},
		{"sentinel client", failover, WorkerConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWorker(tc.rdb, &Saga{}, tc.cfg)
			if w.hooked != nil || w.idle != nil {
				t.Fatal("a worker not started holds a client of its own")
			}
			w.build() // what Start does first
			if got := w.idle != nil && w.idle.block != nil; got != tc.wait {
				t.Fatalf("waits for work: %v, want %v", got, tc.wait)
			}
			if w.hooked != nil {
				w.hooked.Close()
			}
			if w.idle != nil {
				w.idle.close()
			}
		})
	}
}

// probeRecorder records the keys of every EXISTS a client sends, alone or
// in a pipeline.
type probeRecorder struct {
	mu     sync.Mutex
	probes [][]string // the keys of each EXISTS, in order
}

func (r *probeRecorder) record(cmds ...redis.Cmder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cmds {
		if c.Name() != "exists" {
			continue
		}
		var keys []string
		for _, a := range c.Args()[1:] {
			keys = append(keys, fmt.Sprint(a))
		}
		r.probes = append(r.probes, keys)
	}
}

// take returns the probes recorded since the last take.
func (r *probeRecorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.probes
	r.probes = nil
	return p
}

func (r *probeRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *probeRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd)
		return next(ctx, cmd)
	}
}
func (r *probeRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.record(cmds...)
		return next(ctx, cmds)
	}
}

// TestGateProbesOnlyKeysBelievedEmpty (decision 94): a gate probes the
// keys it does not believe to exist, never one it found to exist until a
// script finds that key empty (forget); a key that fills while believed
// empty is found on the next probe. On a single Redis the probe is one
// EXISTS of those keys; on a cluster one EXISTS per queue, in one
// pipeline (a round trip per node).
func TestGateProbesOnlyKeysBelievedEmpty(t *testing.T) {
	t.Parallel()
	var queues []string
	for i := range 8 {
		queues = append(queues, ShardQueue(QueueOrders, i))
	}
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "one Redis", true: "cluster"}[cluster], func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rec := &probeRecorder{}
			var rdb redis.UniversalClient
			var pipe func() redis.Pipeliner
			if cluster {
				c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3}).NewClient(t)
				rdb, pipe = c, c.Pipeline
			} else {
				rdb = redistest.Start(t, redistest.Options{}).NewClient(t)
			}
			rdb.AddHook(rec)
			next := func(ctx context.Context, cmd redis.Cmder) error { return rdb.Process(ctx, cmd) }
			// The forwarder's gate: two keys per queue.
			var keys []string
			for _, q := range queues {
				keys = append(keys, asynqKey(q, gScheduled), asynqKey(q, gRetry))
			}
			g := &gate{keys: keys, ttl: time.Hour, exist: make([]bool, len(keys)), pipe: pipe}
			fill := func(i int) {
				t.Helper()
				if err := rdb.ZAdd(ctx, keys[i], redis.Z{Score: 1, Member: "task"}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			// check asks the gate about every key after making it probe
			// again, and returns the keys it probed.
			check := func(want map[int]bool) map[string]bool {
				t.Helper()
				g.invalidate()
				rec.take()
				for i := range keys {
					ok, err := g.mayExist(ctx, next, i)
					if err != nil {
						t.Fatal(err)
					}
					if want[i] && !ok {
						t.Errorf("key %s exists but the gate believes it empty", keys[i])
					}
				}
				probed := map[string]bool{}
				probes := rec.take()
				for _, p := range probes {
					for _, k := range p {
						probed[k] = true
					}
				}
				if cluster {
					// One EXISTS per queue, and none of two queues (two slots).
					for _, p := range probes {
						if len(p) > 2 || (len(p) == 2 && p[0][:len(p[0])-len(gScheduled)] != p[1][:len(p[1])-len(gRetry)]) {
							t.Errorf("a probe named keys of two queues: %v", p)
						}
					}
				} else if len(probes) > 1+2*4 { // one EXISTS, then halves
					t.Errorf("%d EXISTS sent for one probe: %v", len(probes), probes)
				}
				return probed
			}
			// First probe: every key; two exist (queues 1 and 5).
			fill(2)
			fill(11)
			if probed := check(map[int]bool{2: true, 11: true}); len(probed) != len(keys) {
				t.Fatalf("first probe: %d keys probed, want all %d", len(probed), len(keys))
			}
			// Again: the keys believed to exist are not probed.
			probed := check(map[int]bool{2: true, 11: true})
			if probed[keys[2]] || probed[keys[11]] {
				t.Errorf("keys believed to exist were probed again: %v", probed)
			}
			if !probed[keys[0]] || !probed[keys[15]] {
				t.Errorf("keys believed empty were not probed: %v", probed)
			}
			// A key that fills while believed empty is found.
			fill(6)
			check(map[int]bool{2: true, 6: true, 11: true})
			// A key its script found empty is probed again, and believed empty.
			if err := rdb.Del(ctx, keys[2]).Err(); err != nil {
				t.Fatal(err)
			}
			g.forget(2)
			if probed := check(map[int]bool{6: true, 11: true}); !probed[keys[2]] || probed[keys[6]] {
				t.Errorf("after forget: probed %v, want %s and not %s", probed, keys[2], keys[6])
			}
			if ok, _ := g.mayExist(ctx, next, 2); ok {
				t.Errorf("key %s, deleted and forgotten, is believed to exist", keys[2])
			}
			// Every key believed to exist: nothing to probe, nothing sent.
			for i := range keys {
				fill(i)
			}
			all := map[int]bool{}
			for i := range keys {
				all[i] = true
			}
			check(all)
			if probed := check(all); len(probed) != 0 {
				t.Errorf("every key believed to exist, yet %d probed", len(probed))
			}
		})
	}
}

// TestDequeueGateProbesLessWhileAQueueHasWork (decision 95): while one of
// a server's queues is believed to hold tasks, its queues believed empty
// are probed every busyProbeRounds rounds, not every round; as soon as
// none is, every round again.
func TestDequeueGateProbesLessWhileAQueueHasWork(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).NewClient(t)
	ctx := context.Background()
	rec := &probeRecorder{}
	rdb.AddHook(rec)
	next := func(ctx context.Context, cmd redis.Cmder) error { return rdb.Process(ctx, cmd) }
	w := newIdleWaiter(nil, nil, 0, 10*time.Millisecond)
	w.addServer([]string{"orders", "orders.1", "critical"})
	g := w.gates[pendingKey("orders")].g
	if g.busyTTL != busyProbeRounds*g.ttl {
		t.Fatalf("dequeue gate: busyTTL %s, want %d × %s", g.busyTTL, busyProbeRounds, g.ttl)
	}
	keys := g.keys
	idx := func(q string) int { return slices.Index(keys, pendingKey(q)) }
	rdb.RPush(ctx, pendingKey("orders"), "task")
	// aged makes what g learned as old as d.
	aged := func(d time.Duration) {
		g.mu.Lock()
		g.at = time.Now().Add(-d)
		g.mu.Unlock()
	}
	ask := func(q string) bool {
		t.Helper()
		ok, err := g.mayExist(ctx, next, idx(q))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !ask("orders") || ask("orders.1") {
		t.Fatal("first probe: orders holds a task, orders.1 none")
	}
	rec.take()
	rdb.RPush(ctx, pendingKey("critical"), "task")
	// One round later, orders believed to hold tasks: nothing probed.
	aged(g.ttl)
	if ask("critical") {
		t.Error("critical probed one round later while orders has work")
	}
	if p := rec.take(); len(p) != 0 {
		t.Errorf("probes sent while orders has work: %v", p)
	}
	// busyProbeRounds rounds later: probed, found.
	aged(g.busyTTL)
	if !ask("critical") {
		t.Error("critical not found busyProbeRounds rounds later")
	}
	if p := rec.take(); len(p) != 1 || len(p[0]) != 2 || slices.Contains(p[0], pendingKey("orders")) {
		t.Errorf("probes %v, want one EXISTS of the two keys believed empty", p)
	}
	// Both drained by their scripts: no queue known to have work, so the
	// next round probes.
	rdb.Del(ctx, pendingKey("orders"), pendingKey("critical"))
	g.forget(idx("orders"))
	g.forget(idx("critical"))
	rdb.RPush(ctx, pendingKey("orders.1"), "task")
	aged(g.ttl)
	if !ask("orders.1") {
		t.Error("orders.1 not found one round later with no queue known to have work")
	}
}
