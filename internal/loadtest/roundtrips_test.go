//go:build bench

package loadtest

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/orders"
)

// roundTrips places rounds of 100 orders at once on an in-process API +
// worker (tenant without endpoints) and counts the round trips of the API's
// and the worker's clients until the last is terminal, after a first round
// that warms up scripts and connections: per order, in all and from the
// 202 on.
func (e *loadEnv) roundTrips(ctx context.Context) (all, after202 float64) {
	const n = 100
	a, stop := e.withWorker(ctx, func(c *app.Config) { c.WorkerPool.Hooks = append(c.WorkerPool.Hooks, e.rt) })
	defer stop()
	peek := redis.NewClient(&redis.Options{Addr: e.redis.Addr()}) // uncounted
	defer peek.Close()
	st := orders.NewStore(peek, orders.StoreConfig{})
	p := poster{c: e.http, url: a.URL() + "/v1/orders"}
	round := func(key, tenant string) {
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				id, err := p.post(ctx, key, orderBodyFor(i, 0))
				if err != nil {
					e.t.Errorf("round trips: %v", err)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		for end := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			done := 0
			for _, id := range ids {
				if o, err := st.Get(ctx, tenant, id); err == nil && o.Status.Terminal() {
					done++
				}
			}
			if done == n {
				return
			}
			if time.Now().After(end) {
				e.t.Errorf("round trips: %d of %d orders terminal after a minute", done, n)
				return
			}
		}
	}
	round(apiKey, tenant) // the same tenant: its registration is a first order's
	before := e.rt.Snapshot()
	e.rt.Pause(false)
	round(apiKey, tenant)
	e.rt.Pause(true)
	d := e.rt.Snapshot().Since(before)
	all = float64(d.All) / n
	after202 = all - float64(d.Served)/n
	e.t.Logf("round trips per order: %.2f in all, %.2f after the 202 (%s)", all, after202, d.Breakdown(n))
	e.flush(ctx)
	return all, after202
}
