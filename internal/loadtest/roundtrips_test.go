//go:build bench

package loadtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/orders"
)

// rtCounter counts Redis round trips while on, as
// internal/app's TestRedisRoundTripsPerOrder does: a command, a script or a
// pipeline is one; the worker's waits for work (BLMOVE) and dequeues that
// found nothing are left out; those made while serving an HTTP request
// (their context carries the server's) are counted apart.
type rtCounter struct {
	on            atomic.Bool
	all, inServed atomic.Int64
}

func (c *rtCounter) count(ctx context.Context) {
	if !c.on.Load() {
		return
	}
	c.all.Add(1)
	if ctx.Value(http.ServerContextKey) != nil {
		c.inServed.Add(1)
	}
}

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "blmove" || errors.Is(err, redis.Nil) && emptyDequeue(cmd) {
			return err
		}
		c.count(ctx)
		return err
	}
}

func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.count(ctx); return next(ctx, cmds) }
}

// emptyDequeue says whether cmd is Asynq's dequeue script (4 keys, the
// first a queue's pending list).
func emptyDequeue(cmd redis.Cmder) bool {
	a := cmd.Args()
	if len(a) < 4 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return false
	}
	n, _ := a[2].(int)
	k, _ := a[3].(string)
	return n == 4 && strings.HasSuffix(k, ":pending")
}

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
	round(warmKey, warmTenant)
	e.rt.on.Store(true)
	round(apiKey, tenant)
	e.rt.on.Store(false)
	all = float64(e.rt.all.Load()) / n
	after202 = all - float64(e.rt.inServed.Load())/n
	e.t.Logf("round trips per order: %.2f in all, %.2f after the 202", all, after202)
	e.flush(ctx)
	return all, after202
}
