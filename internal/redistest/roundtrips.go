package redistest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook that counts Redis round trips: a command, a
// script or a pipeline is one. The worker's looking for work is left out
// (its blocking waits, dequeues that found nothing, the EXISTS probes of
// its pending lists: decision 73) and so is Asynq's periodic work
// (heartbeats, the forwarder's looks at the scheduled and retry sets, the
// recoverer's at the leases, the janitor's, the queue set), counted in
// Periodic, as their number follows the clock, not the orders. Those made while serving an HTTP request (their context
// carries the server's; for a POST, before its 202) are counted apart.
// The zero value counts; Pause stops it.
type RoundTrips struct {
	paused atomic.Bool
	mu     sync.Mutex
	n      RoundTripCount
}

// RoundTripCount is what a RoundTrips counted.
type RoundTripCount struct {
	All, Served int64
	// Periodic is Asynq's periodic work, not in All.
	Periodic int64
	// By is by command and first key, cut after its hash tag and one more
	// segment (leaving out ids).
	By map[string]int64
}

// Pause stops (true) or resumes (false) the counting.
func (c *RoundTrips) Pause(p bool) { c.paused.Store(p) }

// Snapshot is the count so far.
func (c *RoundTrips) Snapshot() RoundTripCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.n
	s.By = maps.Clone(c.n.By)
	return s
}

// Since is what was counted between before and n.
func (n RoundTripCount) Since(before RoundTripCount) RoundTripCount {
	d := RoundTripCount{All: n.All - before.All, Served: n.Served - before.Served, Periodic: n.Periodic - before.Periodic, By: map[string]int64{}}
	for k, v := range n.By {
		if v -= before.By[k]; v > 0 {
			d.By[k] = v
		}
	}
	return d
}

// Breakdown is By per order, largest first.
func (n RoundTripCount) Breakdown(orders int) string {
	keys := slices.Collect(maps.Keys(n.By))
	slices.SortFunc(keys, func(a, b string) int {
		if d := n.By[b] - n.By[a]; d != 0 {
			return int(d)
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.2f", k, float64(n.By[k])/float64(orders))
	}
	return strings.Join(parts, ", ")
}

func (c *RoundTrips) add(ctx context.Context, what string) {
	if c.paused.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if periodic(what) {
		c.n.Periodic++
		return
	}
	c.n.All++
	if ctx.Value(http.ServerContextKey) != nil {
		c.n.Served++
	}
	if c.n.By == nil {
		c.n.By = map[string]int64{}
	}
	c.n.By[what]++
}

func (c *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "blmove" || errors.Is(err, redis.Nil) && emptyDequeue(cmd) || queueProbe(cmd) {
			return err
		}
		c.add(ctx, roundTripKind(cmd))
		return err
	}
}

func (c *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(ctx, "pipeline")
		return next(ctx, cmds)
	}
}

// roundTripKind names a command by its name and its first key up to the
// end of the key's hash tag and one more segment.
func roundTripKind(cmd redis.Cmder) string {
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

// periodic says whether a round trip of kind what (roundTripKind) is
// Asynq's periodic work, by its first key: a server's heartbeat
// (asynq:servers, asynq:workers), the forwarder (a queue's scheduled or
// retry set), the recoverer (a queue's lease set), the janitor (its
// completed set), a queue's registration (asynq:queues).
func periodic(what string) bool {
	_, k, _ := strings.Cut(what, " ")
	for _, suffix := range []string{"scheduled", "retry", "lease", "completed", "asynq:queues"} {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return strings.HasPrefix(k, "asynq:servers") || strings.HasPrefix(k, "asynq:workers")
}

// queueProbe says whether cmd is the worker's EXISTS of a pending list.
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
