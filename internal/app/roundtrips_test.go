package app_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// roundTrips is a go-redis hook that counts round trips (a command, a
// script or a pipeline is one), leaving out the worker's looking for work:
// dequeues that found nothing and the blocking waits for a task.
type roundTrips struct {
	n  atomic.Int64
	mu sync.Mutex
	by map[string]int64 // by command and the first key's prefix
}

func (c *roundTrips) add(what string) {
	c.n.Add(1)
	c.mu.Lock()
	if c.by == nil {
		c.by = map[string]int64{}
	}
	c.by[what]++
	c.mu.Unlock()
}

// breakdown is the round trips by kind since before, per order.
func (c *roundTrips) breakdown(before map[string]int64, orders int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for k, v := range c.by {
		if d := v - before[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(d)/float64(orders)))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func (c *roundTrips) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.by)
}

// kind names a command by its name and the first three segments of its
// first key (leaving out orders' and tasks' ids).
func kind(cmd redis.Cmder) string {
	a := cmd.Args()
	i := 1
	if n := cmd.Name(); n == "evalsha" || n == "eval" {
		i = 3
	}
	if len(a) <= i {
		return cmd.Name()
	}
	k, _ := a[i].(string)
	if seg := strings.SplitN(k, ":", 4); len(seg) == 4 {
		k = strings.Join(seg[:3], ":")
	}
	return cmd.Name() + " " + k
}

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "blmove" || errors.Is(err, redis.Nil) && emptyDequeue(cmd) || lookForWork(cmd) {
			return err
		}
		c.add(kind(cmd))
		return err
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.add("pipeline"); return next(ctx, cmds) }
}

// lookForWork says whether cmd is the worker's EXISTS of its pending
// lists (decision 73), its way of looking for work.
func lookForWork(cmd redis.Cmder) bool {
	a := cmd.Args()
	if cmd.Name() != "exists" || len(a) < 2 {
		return false
	}
	k, _ := a[1].(string)
	return strings.HasSuffix(k, ":pending")
}

// emptyDequeue says whether cmd is Asynq's dequeue script (4 keys, the
// first the queue's pending list).
func emptyDequeue(cmd redis.Cmder) bool {
	a := cmd.Args()
	if len(a) < 4 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return false
	}
	n, _ := a[2].(int)
	k, _ := a[3].(string)
	return n == 4 && strings.HasSuffix(k, ":pending")
}

// TestRedisRoundTripsPerOrder counts the Redis round trips of the API and
// the worker per order (a go-redis hook on every client they use: a
// command, a script or a pipeline is one; the worker's empty dequeues and
// waits for work are left out), from the POST to its 202 through the saga
// to the terminal event: for a tenant without endpoints (the event is
// dropped), and with one endpoint (fan-out, delivery task and its POST
// included). Issue 16's target is 6. A round of n orders is placed at once
// and counted until the last is terminal or delivered, after a first round
// that warms up scripts and connections; the periodic work of those
// seconds (heartbeats, forwarder) is spread over the orders.
func TestRedisRoundTripsPerOrder(t *testing.T) {
	const n = 100
	// What it was when this test was written (10.00 and 22.00), plus
	// headroom for periodic work and, on a loaded machine, the webhook
	// path's repeated attempts (23.7 seen): it may go down, not up.
	const (
		maxNoEndpoint   = 11.0 // 202 → terminal, the tenant has no endpoint
		maxWithDelivery = 25.0 // 202 → terminal → webhook delivered to one endpoint
	)
	for _, tc := range []struct {
		name     string
		endpoint bool
		max      float64
	}{{"no endpoint", false, maxNoEndpoint}, {"one endpoint", true, maxWithDelivery}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.NewClient(t)
			other := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: rdb.Options().DB})
			t.Cleanup(func() { other.Close() })
			peek := orders.NewStore(other, orders.StoreConfig{}) // uncounted
			count := &roundTrips{}
			rdb.AddHook(count)
			simSrv := httptest.NewServer(sim.New(sim.Config{}))
			t.Cleanup(simSrv.Close)
			cfg := fastConfig(rdb, simSrv.URL)
			cfg.Logger = testLogger(t)
			fastWebhooks(&cfg)
			cfg.WorkerPool.Hooks = []redis.Hook{count}
			a, url := apptest.Serve(t, cfg)
			b := &bundle{app: a, url: url, rdb: rdb}
			var rcv *hookReceiver
			if tc.endpoint {
				rcv = newHookReceiver(t)
				rcv.hits = make(chan hit, 2*n)
				b.api(t).createEndpoint(apiKey, rcv.URL+"/hooks", webhooks.EventOrderExecuted)
			}
			// A round of the same size first: Redis learns the scripts
			// (EVAL after NOSCRIPT), the pools open their connections.
			run := func(round int) {
				ids := make([]string, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() { ids[i] = b.place(t, order()).ID })
				}
				wg.Wait()
				pollUntil(t, 60*time.Second, "orders terminal", func() bool {
					for _, id := range ids {
						o, err := peek.Get(context.Background(), "acme", id)
						if err != nil || !o.Status.Terminal() {
							return false
						}
					}
					return true
				})
				if tc.endpoint {
					pollUntil(t, 60*time.Second, "webhooks delivered", func() bool { return rcv.count.Load() >= int64(round*n) })
				}
			}
			run(1)
			before, beforeBy := count.n.Load(), count.snapshot()
			run(2)
			per := float64(count.n.Load()-before) / n
			t.Logf("Redis round trips per order (%s): %.2f (%s)", tc.name, per, count.breakdown(beforeBy, n))
			if per > tc.max {
				t.Errorf("%.2f Redis round trips per order (%s), want at most %.0f", per, tc.name, tc.max)
			}
		})
	}
}
