package app_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// TestRedisRoundTripsPerOrder counts the Redis round trips of the API and
// the worker per order (a go-redis hook on every client they use: a
// command, a script or a pipeline is one; the worker's empty dequeues and
// waits for work are left out), from the POST to its 202 through the saga
// to the terminal event: for a tenant without endpoints (the event is
// dropped), and with one endpoint (fan-out, delivery task and its POST
// included). Those made while serving the POST (before its 202: the
// create script and the enqueue, in one pipeline since decision 88) are
// told apart by their context, which
// carries the HTTP server's. Issue 16's target is 6 from the 202 to the
// terminal webhook enqueued. A round of n orders is placed at once and
// counted until the last is terminal or delivered, after a first round
// that warms up scripts and connections. Asynq's periodic work of those
// seconds (heartbeats, the forwarder, the recoverer, the janitor), whose
// share grew with the round's length on a loaded machine (8.91 against a
// ceiling of 8.5 once), is logged apart and not held to the ceilings.
func TestRedisRoundTripsPerOrder(t *testing.T) {
	const n = 100
	// What it is (7.00 and 19.00 in all, 1.00 of the first before the
	// 202 and 6.00 after it; decisions 80 and 88), plus headroom for the
	// saga's lease renewals and, on a loaded machine, the webhook path's
	// repeated attempts: it may go down, not up.
	const (
		maxNoEndpoint   = 7.5  // POST → terminal, the tenant has no endpoint
		maxServed       = 1.0  // the POST: create and enqueue in one pipeline
		maxAfter202     = 6.3  // 202 → terminal event stored (no endpoint): issue 16's row, 6 and periodic work
		maxWithDelivery = 22.0 // POST → terminal → webhook delivered to one endpoint
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
			count := &redistest.RoundTrips{}
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
			before := count.Snapshot()
			run(2)
			d := count.Snapshot().Since(before)
			per := float64(d.All) / n
			inReq := float64(d.Served) / n
			t.Logf("Redis round trips per order (%s): %.2f, %.2f before the 202 and %.2f after it (%s; Asynq's periodic work apart: %d)", tc.name, per, inReq, per-inReq, d.Breakdown(n), d.Periodic)
			if per > tc.max {
				t.Errorf("%.2f Redis round trips per order (%s), want at most %.1f", per, tc.name, tc.max)
			}
			if inReq < 1 {
				t.Errorf("%.2f round trips per order while serving the POST: the request's context is no longer told apart", inReq)
			}
			if inReq > maxServed {
				t.Errorf("%.2f Redis round trips per order while serving the POST, want at most %.1f (create and enqueue in one pipeline)", inReq, maxServed)
			}
			if !tc.endpoint && per-inReq > maxAfter202 {
				t.Errorf("%.2f Redis round trips per order from the 202 to the terminal event, want at most %.1f", per-inReq, maxAfter202)
			}
		})
	}
}
