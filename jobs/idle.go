package jobs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redisslot"
)

// idleWaiter keeps the cost of an Asynq server's per-queue loops down,
// whatever the number of queues (decisions 57 and 73). It is a go-redis
// hook on the client the servers use, and does two things.
//
// It answers scripts on queues it knows to be empty without sending them.
// Asynq runs a script per queue for each dequeue round (until one finds a
// task), two per queue for each forwarder round, one per queue for each
// janitor round and two for each recoverer round: with 16 shards of 3
// kinds that is about 200 commands a second for an idle worker, and up to
// 96 per dequeue round for a busy one. Every key those scripts read first
// (the pending list; the scheduled and retry sets; the completed set; the
// lease set; the aggregation sets) is empty most of the time, and an empty
// key does not exist in Redis: the waiter learns which of them exist with
// one EXISTS of a server's keys of that kind (Redis counts it as one
// command), narrowed down by halves when some do, and sends only the
// scripts on keys that exist. On a cluster, where one command cannot name
// keys of two slots, it learns by a pipeline of one EXISTS per queue (a
// round trip per node). It probes only the keys it does not believe to
// exist (decision 94): a key found to exist is sent its scripts, unprobed,
// until one of them finds it empty. What it learned of the others holds
// for one round (a dequeue round: PollInterval/2; the others: a tenth of a
// second), so a task arriving meanwhile is seen on the next round, as
// before.
//
// And it makes an idle server wait for work instead of polling. Asynq's
// processor, after a round that found nothing, sleeps TaskCheckInterval;
// it has no way to be woken. When a whole round of dequeues came back
// empty, the waiter holds the last one back until a task arrives on one of
// the server's queues or IdleWait passes, so the short TaskCheckInterval
// that follows is all the latency a new task sees. A server that had a
// task within the last busyLinger polls, as before.
//
// A task's arrival is seen without any help from the enqueuers: a BLMOVE
// of each pending list onto itself (head to head) blocks until the list
// has an element and leaves it as it was. The blocking calls use a client
// of their own, which opens a connection per pending list (per node) as
// needed, so they never take the connections of anything else. An error of a blocking call ends the
// wait; a Redis without BLMOVE makes the server poll as before from then on.
type idleWaiter struct {
	// newBlock makes the client of the blocking calls with a pool of up
	// to n connections (per node); nil: no waiting, the gates only.
	newBlock func(n int) redis.UniversalClient
	// newPipe, on a cluster, makes a pipeline of the hooked client, by
	// which a gate learns with one EXISTS per queue (the keys of a script
	// are in one slot, those of two queues seldom are); nil on a single
	// Redis.
	newPipe func() redis.Pipeliner
	wait    time.Duration
	poll    time.Duration
	done    chan struct{}
	once    sync.Once
	// broken is set when Redis refused a blocking call (unsupported): from
	// then on the servers poll every TaskCheckInterval. Other errors (a
	// connection dropped by a failover, a master going down) end the wait
	// only: the next one tries again (decision 84).
	broken atomic.Bool

	block redis.UniversalClient // for the blocking calls, made by start
	// sendAll sends every script (WorkerConfig.ScriptPerQueue).
	sendAll bool

	mu      sync.Mutex
	servers map[string]*idleServer // by pending key
	gates   map[string]gateKey     // by the first key of a gated script
}

// gateKey is where a key sits: its gate and its index there.
type gateKey struct {
	g *gate
	i int
}

// A gate knows which of a set of keys (one kind of key of a server's
// queues) exist, learned at most once per ttl.
type gate struct {
	keys []string
	ttl  time.Duration
	// busyTTL, when set, is how long what the gate learned of the keys
	// believed empty holds while one of its keys is believed to exist
	// (a dequeue gate: the server has work without them); see
	// busyProbeRounds.
	busyTTL time.Duration
	// pipe: learn by a pipeline (cluster); see idleWaiter.
	pipe func() redis.Pipeliner

	mu sync.Mutex
	at time.Time // when last probed; zero: must probe
	// exist: the key may exist (send its script). A key found to exist
	// stays so until its script finds it empty (forget), and is not
	// probed meanwhile.
	exist []bool
	probe []int // the indexes of the keys to probe (learn's, reused)
}

// gate kinds: the suffix of the first key of the script they gate
// (asynqkeys.go).

// idleServer is the state of one Asynq server's dequeue loop (one goroutine).
type idleServer struct {
	pending []string      // the pending lists of the server's queues
	gate    *gate         // of the pending lists
	empty   int           // dequeues in a row that found nothing
	woken   bool          // the last wait ended with a wake-up
	busy    time.Time     // when the server last dequeued a task
	wake    chan bool     // true: a task arrived; false: the blocking call failed
	blocked []atomic.Bool // a BLMOVE on pending[i] is running
}

// busyLinger is how long a server that dequeued a task polls before it
// waits for work again.
const busyLinger = time.Second

// busyProbeRounds is how many dequeue rounds what a server's gate learned
// of its queues believed empty holds while another of its queues is known
// to hold tasks (decision 95). Such a server has work without them; a
// task arriving on one of them waits up to that many rounds (20 ms with
// the default PollInterval) instead of one, while the server's queues
// with tasks are served. When none is known to hold tasks, what it learned
// holds one round, as before, so that a polling server sees a new task as
// soon.
const busyProbeRounds = 4

// periodicTTL is how long what a gate of the periodic scripts (forwarder,
// janitor, recoverer) learned holds: one round of them, well under their
// intervals (a second and more).
const periodicTTL = 100 * time.Millisecond

// newIdleWaiter returns a waiter whose blocking calls use a client made
// by newBlock (nil: no waiting, the gates only), waiting up to wait; poll
// is the servers' TaskCheckInterval. pipe is nil but on a cluster (see
// idleWaiter.newPipe).
func newIdleWaiter(newBlock func(int) redis.UniversalClient, pipe func() redis.Pipeliner, wait, poll time.Duration) *idleWaiter {
	w := &idleWaiter{newBlock: newBlock, wait: wait, poll: poll, done: make(chan struct{}),
		servers: make(map[string]*idleServer), gates: make(map[string]gateKey)}
	w.newPipe = pipe
	return w
}

// addServer registers the queues of one Asynq server.
func (w *idleWaiter) addServer(queues []string) {
	s := &idleServer{wake: make(chan bool, 1), blocked: make([]atomic.Bool, len(queues))}
	for _, q := range queues {
		s.pending = append(s.pending, pendingKey(q))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range s.pending {
		w.servers[k] = s
	}
	s.gate = w.addGate(s.pending, w.poll/2)
	s.gate.busyTTL = busyProbeRounds * w.poll / 2
	// The forwarder's scheduled and retry sets share one gate: one round
	// of it reads both of every queue.
	var delayed []string
	for _, q := range queues {
		delayed = append(delayed, asynqKey(q, gScheduled), asynqKey(q, gRetry))
	}
	w.addGate(delayed, periodicTTL)
	for _, kind := range []string{gCompleted, gLease, gAggSets} {
		var keys []string
		for _, q := range queues {
			keys = append(keys, asynqKey(q, kind))
		}
		w.addGate(keys, periodicTTL)
	}
}

func (w *idleWaiter) addGate(keys []string, ttl time.Duration) *gate {
	g := &gate{keys: keys, ttl: ttl, exist: make([]bool, len(keys)), pipe: w.newPipe}
	for i, k := range keys {
		w.gates[k] = gateKey{g, i}
	}
	return g
}

// start makes the blocking client.
func (w *idleWaiter) start() {
	if w.newBlock == nil {
		return
	}
	// Its pool opens connections as they are needed, up to one per
	// pending list of the most shards there can be: servers added for new
	// shards (Worker.watchShards) block on it too.
	w.block = w.newBlock(len(queueKinds)*MaxQueueShards + 4)
}

// stop ends every wait at once (before the servers shut down).
func (w *idleWaiter) stop() { w.once.Do(func() { close(w.done) }) }

// close releases the blocking client (after the servers shut down).
func (w *idleWaiter) close() {
	if w.block != nil {
		w.block.Close()
	}
}

func (w *idleWaiter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *idleWaiter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (w *idleWaiter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		gk, kind := w.gatedOf(cmd)
		if gk.g == nil {
			return next(ctx, cmd)
		}
		if kind != gPending {
			return w.periodic(ctx, next, cmd, gk, kind)
		}
		w.mu.Lock()
		s := w.servers[gk.g.keys[gk.i]]
		w.mu.Unlock()
		return w.dequeue(ctx, next, cmd, s, gk.i)
	}
}

// gatedOf returns the gate and kind of the script cmd runs, if one is
// gated. Asynq's scripts are told apart by their first key's suffix (each
// suffix starts one script of the server's) and their number of keys.
func (w *idleWaiter) gatedOf(cmd redis.Cmder) (gateKey, string) {
	args := cmd.Args()
	if len(args) < 4 {
		return gateKey{}, ""
	}
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return gateKey{}, ""
	}
	n, ok := args[2].(int)
	first, ok2 := args[3].(string)
	if !ok || !ok2 || len(args) < 3+n {
		return gateKey{}, ""
	}
	var kind string
	switch {
	case n == 4 && strings.HasSuffix(first, gPending):
		if paused, _ := args[4].(string); !strings.HasSuffix(paused, ":paused") {
			return gateKey{}, ""
		}
		kind = gPending
	case n == 2 && (strings.HasSuffix(first, gScheduled) || strings.HasSuffix(first, gRetry)):
		kind = gScheduled
	case n == 1 && strings.HasSuffix(first, gCompleted):
		kind = gCompleted
	case n == 1 && strings.HasSuffix(first, gLease):
		kind = gLease
	case n == 1 && strings.HasSuffix(first, gAggSets):
		kind = gAggSets
	default:
		return gateKey{}, ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	gk, ok := w.gates[first]
	if !ok || (w.sendAll && kind != gPending) {
		return gateKey{}, ""
	}
	return gk, kind
}

// mayExist reports whether g's key i may exist, learning it first when
// what g knows is too old.
func (g *gate) mayExist(ctx context.Context, next redis.ProcessHook, i int) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.at.IsZero() || g.stale(time.Since(g.at)) {
		if err := g.learn(ctx, next); err != nil {
			g.at = time.Time{}
			return true, err
		}
		g.at = time.Now()
	}
	return g.exist[i], nil
}

// stale reports whether what g learned age ago must be learned again.
func (g *gate) stale(age time.Duration) bool {
	if age < g.ttl {
		return false
	}
	if g.busyTTL == 0 || age >= g.busyTTL {
		return true
	}
	return !slices.Contains(g.exist, true)
}

// forget marks key i as empty until g learns again (its script found it so).
func (g *gate) forget(i int) {
	g.mu.Lock()
	g.exist[i] = false
	g.mu.Unlock()
}

// invalidate makes g learn again on its next use.
func (g *gate) invalidate() {
	g.mu.Lock()
	g.at = time.Time{}
	g.mu.Unlock()
}

// learn finds which of g's keys exist, probing only those it does not
// already believe to exist: a key believed to exist is always safe to send
// the script of (the script finds nothing and returns, and forget marks the
// key for the next probe); believing a key absent while it exists is the
// only error that delays a task, and a probe per round bounds it. On a
// single Redis it is one EXISTS of them all, then, when some do and they
// are few, EXISTS of halves until each is placed. When half of the probed
// keys or more exist, it stops there: sending their scripts costs less than
// placing them. Nothing to probe, nothing sent.
func (g *gate) learn(ctx context.Context, next redis.ProcessHook) error {
	idx := g.probe[:0]
	for i, ok := range g.exist {
		if !ok {
			idx = append(idx, i)
		}
	}
	g.probe = idx
	if len(idx) == 0 {
		return nil
	}
	if g.pipe != nil {
		return g.learnByQueue(ctx, idx)
	}
	n, err := exists(ctx, next, g.keysOf(idx))
	if err != nil {
		return err
	}
	if 2*n >= int64(len(idx)) {
		n = int64(len(idx)) // as good as all: send every script
	}
	return g.place(ctx, next, idx, n)
}

// keysOf is g's keys at the indexes idx.
func (g *gate) keysOf(idx []int) []string {
	keys := make([]string, len(idx))
	for j, i := range idx {
		keys[j] = g.keys[i]
	}
	return keys
}

// place marks which of the keys at the indexes idx, n of which exist, do.
func (g *gate) place(ctx context.Context, next redis.ProcessHook, idx []int, n int64) error {
	switch {
	case n <= 0:
		for _, i := range idx {
			g.exist[i] = false
		}
		return nil
	case n >= int64(len(idx)):
		for _, i := range idx {
			g.exist[i] = true
		}
		return nil
	}
	mid := len(idx) / 2
	left, err := exists(ctx, next, g.keysOf(idx[:mid]))
	if err != nil {
		return err
	}
	if err := g.place(ctx, next, idx[:mid], left); err != nil {
		return err
	}
	return g.place(ctx, next, idx[mid:], n-left)
}

// learnByQueue learns, on a cluster, which of the keys at the indexes idx
// exist, with a pipeline of one EXISTS per queue (its keys share the
// queue's hash tag, so one slot): go-redis sends it as one round trip per
// node, all nodes at once.
func (g *gate) learnByQueue(ctx context.Context, idx []int) error {
	type group struct {
		idx []int
		cmd *redis.IntCmd
	}
	var groups []*group
	byTag := map[string]*group{}
	for _, i := range idx {
		tag := redisslot.Tag(g.keys[i])
		gr := byTag[tag]
		if gr == nil {
			gr = &group{}
			byTag[tag] = gr
			groups = append(groups, gr)
		}
		gr.idx = append(gr.idx, i)
	}
	p := g.pipe()
	for _, gr := range groups {
		gr.cmd = p.Exists(ctx, g.keysOf(gr.idx)...)
	}
	if _, err := p.Exec(ctx); err != nil {
		return err
	}
	for _, gr := range groups {
		for _, i := range gr.idx {
			g.exist[i] = gr.cmd.Val() > 0
		}
	}
	return nil
}

// exists runs EXISTS keys... on the hooked client's next hook.
func exists(ctx context.Context, next redis.ProcessHook, keys []string) (int64, error) {
	args := make([]any, 0, len(keys)+1)
	args = append(args, "exists")
	for _, k := range keys {
		args = append(args, k)
	}
	c := redis.NewIntCmd(ctx, args...)
	if err := next(ctx, c); err != nil {
		return 0, err
	}
	return c.Val(), nil
}

// periodic runs or answers a forwarder, janitor or recoverer script.
func (w *idleWaiter) periodic(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder, gk gateKey, kind string) error {
	ok, err := gk.g.mayExist(ctx, next, gk.i)
	if err != nil || ok {
		err := next(ctx, cmd)
		if err != nil {
			return err // the key stays believed to exist: safe
		}
		// A forward that moved fewer than its batch (100) has moved every
		// due task: Asynq runs it again until it moves none, which this
		// round need not send. The other scripts' answers do not tell
		// whether their key is now empty (a janitor leaves completed tasks
		// not yet expired, a recoverer leases not yet expired): their
		// keys are probed again on the next round, as if found empty.
		if c, isCmd := cmd.(*redis.Cmd); isCmd && kind == gScheduled {
			if n, _ := c.Val().(int64); n < 100 {
				gk.g.forget(gk.i)
			}
		} else if kind != gScheduled {
			gk.g.forget(gk.i)
		}
		return nil
	}
	c, isCmd := cmd.(*redis.Cmd)
	if !isCmd {
		return next(ctx, cmd)
	}
	switch kind {
	case gScheduled, gCompleted: // tasks moved, deleted
		c.SetVal(int64(0))
	case gLease: // expired leases
		c.SetVal([]any{})
	case gAggSets:
		c.SetVal("OK")
	}
	return nil
}

// dequeue runs or answers a dequeue of s's queue i, and waits for work
// after a round that found nothing.
func (w *idleWaiter) dequeue(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder, s *idleServer, i int) error {
	var err error
	if w.sendAll {
		err = next(ctx, cmd)
	} else if ok, lerr := s.gate.mayExist(ctx, next, i); lerr != nil || ok {
		err = next(ctx, cmd)
		if errors.Is(err, redis.Nil) {
			s.gate.forget(i) // emptied since, or paused
		}
	} else {
		cmd.SetErr(redis.Nil)
		err = redis.Nil
	}
	if !errors.Is(err, redis.Nil) {
		s.empty, s.woken, s.busy = 0, false, time.Now()
		return err
	}
	if s.empty++; s.empty < len(s.pending) {
		return err
	}
	s.empty = 0
	// A server that had work within the last busyLinger polls as Asynq
	// does: under load its queues empty and fill every few
	// milliseconds, and a wake-up costs a write (an fsync under
	// appendfsync always) where an empty round costs one EXISTS.
	if w.block != nil && !w.broken.Load() && time.Since(s.busy) >= busyLinger {
		w.idle(ctx, s)
		s.gate.invalidate() // woken or not, look at the queues afresh
	}
	return err
}

// idle waits until a task arrives on one of s's queues, IdleWait passes,
// the waiter stops or ctx ends.
func (w *idleWaiter) idle(ctx context.Context, s *idleServer) {
	// A little past the blocking calls' own timeout, so that they have
	// returned before the next wait starts new ones.
	t := time.NewTimer(w.wait + w.wait/10)
	defer t.Stop()
	if s.woken {
		// The last wake-up found nothing: another worker took the task, or
		// the queue is paused with tasks in it (its list stays non-empty).
		// Sleep this round out, or a paused queue would be polled flat out.
		s.woken = false
		select {
		case <-t.C:
		case <-w.done:
		case <-ctx.Done():
		}
		return
	}
	select {
	case <-s.wake: // stale
	default:
	}
	for i, key := range s.pending {
		if !s.blocked[i].CompareAndSwap(false, true) {
			continue // still blocking since an earlier wait
		}
		go func() {
			err := w.block.BLMove(context.Background(), key, key, "LEFT", "LEFT", w.wait).Err()
			s.blocked[i].Store(false)
			if errors.Is(err, redis.Nil) {
				return // timed out: the waiter's timer ends the wait
			}
			if err != nil {
				select {
				case <-w.done:
					return // the client closed under us
				default:
				}
				if unsupported(err) {
					w.broken.Store(true)
				}
			}
			select {
			case s.wake <- err == nil:
			default:
			}
		}()
	}
	select {
	case s.woken = <-s.wake:
	case <-t.C:
	case <-w.done:
	case <-ctx.Done():
	}
}

// unsupported reports whether err is Redis refusing the blocking call
// itself (a Redis older than 6.2 has no BLMOVE), not a passing failure.
func unsupported(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := strings.ToLower(rerr.Error())
	return strings.Contains(msg, "unknown command") || strings.Contains(msg, "wrong number of arguments")
}
