//go:build bench

package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
// pipeline is one; the worker's looking for work (BLMOVE waits, dequeues
// that found nothing, EXISTS probes of the queues) is left out; those made while serving an HTTP request
// (their context carries the server's) are counted apart.
type rtCounter struct {
	on            atomic.Bool
	all, inServed atomic.Int64
	mu            sync.Mutex
	by            map[string]int64 // by command and first key, cut after its hash tag
}

func (c *rtCounter) count(ctx context.Context, what string) {
	if !c.on.Load() {
		return
	}
	c.all.Add(1)
	c.mu.Lock()
	if c.by == nil {
		c.by = map[string]int64{}
	}
	c.by[what]++
	c.mu.Unlock()
	if ctx.Value(http.ServerContextKey) != nil {
		c.inServed.Add(1)
	}
}

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "blmove" || errors.Is(err, redis.Nil) && emptyDequeue(cmd) || queueProbe(cmd) {
			return err
		}
		c.count(ctx, rtKind(cmd))
		return err
	}
}

// rtKind names a command by its name and its first key up to the end of
// the key's hash tag (leaving out ids).
func rtKind(cmd redis.Cmder) string {
	a := cmd.Args()
	i := 1
	if n := cmd.Name(); n == "evalsha" || n == "eval" {
		i = 3
	}
	if len(a) <= i {
		return cmd.Name()
	}
	k, _ := a[i].(string)
	if j := strings.IndexByte(k, '}'); j >= 0 {
		k = k[:j+1] + strings.SplitN(k[j+1:]+":", ":", 3)[1]
	}
	return cmd.Name() + " " + k
}

// breakdown is the counts by kind per order, largest first.
func (c *rtCounter) breakdown(orders int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range c.by {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { return int(b.v - a.v) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f", e.k, float64(e.v)/float64(orders)))
	}
	return strings.Join(parts, ", ")
}

func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.count(ctx, "pipeline"); return next(ctx, cmds) }
}

// queueProbe says whether cmd is the worker's probe of which queues hold
// tasks (EXISTS of a pending list, decision 73): looking for work, as an
// empty dequeue is, whose count follows the clock, not the orders.
func queueProbe(cmd redis.Cmder) bool {
	a := cmd.Args()
	if cmd.Name() != "exists" || len(a) < 2 {
		return false
	}
	k, _ := a[1].(string)
	return strings.HasSuffix(k, ":pending")
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
	round(apiKey, tenant) // the same tenant: its registration is a first order's
	e.rt.on.Store(true)
	round(apiKey, tenant)
	e.rt.on.Store(false)
	all = float64(e.rt.all.Load()) / n
	after202 = all - float64(e.rt.inServed.Load())/n
	e.t.Logf("round trips per order: %.2f in all, %.2f after the 202 (%s)", all, after202, e.rt.breakdown(n))
	e.flush(ctx)
	return all, after202
}
