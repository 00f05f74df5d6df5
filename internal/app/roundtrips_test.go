package app_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
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
	n atomic.Int64
	// inRequest counts those made while serving an HTTP request (their
	// context carries the server's): for a POST, before its 202.
	inRequest atomic.Int64
	mu        sync.Mutex
	by        map[string]int64 // by command and the first key's prefix
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
		c.request(ctx)
		return err
	}
}

// request counts a round trip made while serving an HTTP request.
func (c *roundTrips) request(ctx context.Context) {
	if ctx.Value(http.ServerContextKey) != nil {
		c.inRequest.Add(1)
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add("pipeline")
		c.request(ctx)
		return next(ctx, cmds)
	}
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
// included). Those made while serving the POST (before its 202: the
// create script and the enqueue) are told apart by their context, which
// carries the HTTP server's. Issue 16's target is 6 from the 202 to the
// terminal webhook enqueued. A round of n orders is placed at once and
// counted until the last is terminal or delivered, after a first round
// that warms up scripts and connections; the periodic work of those
// seconds (heartbeats, forwarder) is spread over the orders.
func TestRedisRoundTripsPerOrder(t *testing.T) {
	const n = 100
	// What it is (8.00 and 20.00 in all, 6.00 of the first after the
	// 202; decision 80), plus headroom for periodic work and, on a loaded
	// machine, the webhook path's repeated attempts: it may go down, not up.
	const (
		maxNoEndpoint   = 8.5  // POST → terminal, the tenant has no endpoint
		maxAfter202     = 6.3  // 202 → terminal event stored (no endpoint): issue 16's row, 6 and periodic work
		maxWithDelivery = 23.0 // POST → terminal → webhook delivered to one endpoint
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
			before, beforeReq, beforeBy := count.n.Load(), count.inRequest.Load(), count.snapshot()
			run(2)
			per := float64(count.n.Load()-before) / n
			inReq := float64(count.inRequest.Load()-beforeReq) / n
			t.Logf("Redis round trips per order (%s): %.2f, %.2f before the 202 and %.2f after it (%s)", tc.name, per, inReq, per-inReq, count.breakdown(beforeBy, n))
			if per > tc.max {
				t.Errorf("%.2f Redis round trips per order (%s), want at most %.1f", per, tc.name, tc.max)
			}
			if inReq < 1 {
				t.Errorf("%.2f round trips per order while serving the POST: the request's context is no longer told apart", inReq)
			}
			if !tc.endpoint && per-inReq > maxAfter202 {
				t.Errorf("%.2f Redis round trips per order from the 202 to the terminal event, want at most %.1f", per-inReq, maxAfter202)
			}
		})
	}
}
