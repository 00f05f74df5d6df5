package downstream

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

// These tests run replicas (each its own Redis client, Shared and Portfolio client, as
// separate processes would have) against a real redis-server and one simulator.

const sharedOpenTimeout = 300 * time.Millisecond

type replica struct {
	name   string
	rdb    *redis.Client
	shared *Shared
	p      *Portfolio
}

// newReplica starts a replica on the Redis of opts and the simulator at simURL. Its
// breaker trips after 4 failures and stays open for sharedOpenTimeout; it resyncs only on
// (re)subscription.
func newReplica(t *testing.T, name string, opts *redis.Options, simURL string) *replica {
	t.Helper()
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	sh := NewShared(rdb, SharedConfig{Instance: name, ResyncInterval: time.Hour, Timeout: 200 * time.Millisecond})
	cfg := testConfig(simURL)
	cfg.MaxAttempts = 1
	cfg.Breaker = BreakerConfig{MinRequests: 4, OpenTimeout: sharedOpenTimeout}
	cfg.Shared = sh
	p, err := NewPortfolio(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sh.Start(t.Context())
	t.Cleanup(sh.Close)
	return &replica{name: name, rdb: rdb, shared: sh, p: p}
}

// sharedSetup starts a simulator and a fresh Redis database.
func sharedSetup(t *testing.T) (*testBundle, *redis.Options) {
	t.Helper()
	srv := redistest.Shared(t)
	opts := &redis.Options{Addr: srv.Addr(), DB: srv.NewDB(t)}
	return setup(t, nil, nil), opts
}

// waitState polls until r's breaker is in state (the notice travels through Redis).
func waitState(t *testing.T, r *replica, want gobreaker.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.p.BreakerState() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: breaker %v, want %v", r.name, r.p.BreakerState(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func trip(t *testing.T, r *replica) {
	t.Helper()
	for range 4 {
		if _, err := r.p.Get(t.Context(), "acme", "acc"); err == nil {
			t.Fatal("Get succeeded during the outage")
		}
	}
	if got := r.p.BreakerState(); got != gobreaker.StateOpen {
		t.Fatalf("%s: breaker %v after 4 failures", r.name, got)
	}
}

// sleepUntil sleeps until t has passed: the breaker's open time is wall-clock time.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t) + 5*time.Millisecond) }

func TestSharedTripOpensEveryReplica(t *testing.T) {
	t.Parallel()
	tb, opts := sharedSetup(t)
	a := newReplica(t, "a", opts, tb.url)
	b := newReplica(t, "b", opts, tb.url)
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})

	trip(t, a)
	waitState(t, b, gobreaker.StateOpen)
	_, err := b.p.Get(t.Context(), "acme", "acc")
	if d, ok := Postpone(err); !ok || d <= 0 || d > sharedOpenTimeout {
		t.Errorf("b: err = %v, want an open breaker for at most %v", err, sharedOpenTimeout)
	}
	if got := tb.sim.Stats().PortfolioRequests; got != 4 {
		t.Errorf("PortfolioRequests = %d, want the 4 of a: b learnt the trip without calling", got)
	}
	ua, ub := a.p.Breaker().OpenUntil, b.p.Breaker().OpenUntil
	if d := ua.Sub(ub); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("open until: a %v, b %v; want the same instant", ua, ub)
	}

	// A replica started during the trip reads it from Redis.
	c := newReplica(t, "c", opts, tb.url)
	waitState(t, c, gobreaker.StateOpen)
}

func TestSharedOneProbeAtATime(t *testing.T) {
	t.Parallel()
	tb, opts := sharedSetup(t)
	replicas := []*replica{newReplica(t, "a", opts, tb.url), newReplica(t, "b", opts, tb.url)}
	a, b := replicas[0], replicas[1]
	// The probe is slow, so that the other calls arrive while it is in flight.
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503, Latency: 100 * time.Millisecond})
	trip(t, a)
	waitState(t, b, gobreaker.StateOpen)

	// burst sends 10 concurrent reads from each replica and returns how many went out.
	burst := func() (sent int64, errs []error) {
		before := a.p.Stats().Sent + b.p.Stats().Sent
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, r := range replicas {
			for range 10 {
				wg.Go(func() {
					_, err := r.p.Get(t.Context(), "acme", "acc")
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		return a.p.Stats().Sent + b.p.Stats().Sent - before, errs
	}

	sleepUntil(a.p.Breaker().OpenUntil)
	if got := b.p.BreakerState(); got != gobreaker.StateHalfOpen {
		t.Fatalf("b after the open time: %v, want half-open", got)
	}
	sent, errs := burst()
	if sent != 1 {
		t.Fatalf("calls sent while half-open = %d, want one probe for both replicas", sent)
	}
	open := 0
	for _, err := range errs {
		if errors.Is(err, ErrBreakerOpen) {
			open++
		}
	}
	if open != len(errs)-1 {
		t.Errorf("%d of %d calls rejected by the breaker, want all but the probe", open, len(errs))
	}
	// The probe failed: open again, everywhere.
	waitState(t, a, gobreaker.StateOpen)
	waitState(t, b, gobreaker.StateOpen)

	// The downstream is back: one probe closes both.
	tb.sim.ClearFaults()
	tb.setFaults(t, sim.Portfolio, sim.Faults{Latency: 100 * time.Millisecond})
	sleepUntil(a.p.Breaker().OpenUntil)
	if sent, _ := burst(); sent != 1 {
		t.Fatalf("calls sent while half-open = %d, want one probe", sent)
	}
	waitState(t, a, gobreaker.StateClosed)
	waitState(t, b, gobreaker.StateClosed)
	for _, r := range replicas {
		if _, err := r.p.Get(t.Context(), "acme", "acc"); err != nil {
			t.Errorf("%s after the good probe: %v", r.name, err)
		}
	}
	if n, _ := a.rdb.Exists(t.Context(), a.shared.keys.breaker("portfolio"), a.shared.keys.probe("portfolio")).Result(); n != 0 {
		t.Errorf("%d breaker keys left after the close", n)
	}
}

func TestSharedProbeLockOfDeadReplica(t *testing.T) {
	t.Parallel()
	tb, opts := sharedSetup(t)
	a := newReplica(t, "a", opts, tb.url)
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	trip(t, a)
	tb.sim.ClearFaults()
	// A replica that died while probing holds the lock until its TTL ends.
	if err := a.rdb.Set(t.Context(), a.shared.keys.probe("portfolio"), "dead", 400*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	sleepUntil(a.p.Breaker().OpenUntil)
	_, err := a.p.Get(t.Context(), "acme", "acc")
	if d, ok := Postpone(err); !ok || d > 400*time.Millisecond {
		t.Fatalf("err = %v, want the open breaker until the lock's TTL ends", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := a.p.Get(t.Context(), "acme", "acc"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("still failing after the lock's TTL: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := a.p.BreakerState(); got != gobreaker.StateClosed {
		t.Errorf("state = %v, want closed", got)
	}
}

func TestSharedClosedPathSkipsRedis(t *testing.T) {
	t.Parallel()
	tb, opts := sharedSetup(t)
	a := newReplica(t, "a", opts, tb.url)
	var commands atomic.Int64
	a.rdb.AddHook(countHook{&commands})
	ctx := t.Context()
	before := commands.Load()
	for range 100 {
		if _, err := a.p.Get(ctx, "acme", "acc"); err != nil {
			t.Fatal(err)
		}
	}
	if got := commands.Load() - before; got != 0 {
		t.Errorf("%d Redis commands for 100 calls through a closed breaker, want none", got)
	}
}

type countHook struct{ n *atomic.Int64 }

// count counts what a call could send: not the connection setup, not the resync's GET.
func (h countHook) count(cmd redis.Cmder) {
	switch cmd.Name() {
	case "eval", "evalsha", "set", "del", "publish":
		h.n.Add(1)
	}
}

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}

func TestSharedWithoutRedis(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	// Nothing listens on port 1: every Redis command fails at once.
	r := newReplica(t, "a", &redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}, tb.url)
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	trip(t, r)
	tb.sim.ClearFaults()
	sleepUntil(r.p.Breaker().OpenUntil)
	start := time.Now()
	if _, err := r.p.Get(t.Context(), "acme", "acc"); err != nil {
		t.Fatalf("probe without Redis: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("probe took %v: the lock's Redis timeout must bound it", d)
	}
	if got := r.p.BreakerState(); got != gobreaker.StateClosed {
		t.Errorf("state = %v, want closed", got)
	}
}

func TestSharedResyncAfterReconnect(t *testing.T) {
	t.Parallel()
	tb, opts := sharedSetup(t)
	a := newReplica(t, "a", opts, tb.url)
	proxy := startProxy(t, opts.Addr)
	bOpts := *opts
	bOpts.Addr = proxy.addr()
	b := newReplica(t, "b", &bOpts, tb.url)

	// b hears a's trip and close while connected.
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	trip(t, a)
	waitState(t, b, gobreaker.StateOpen)
	tb.sim.ClearFaults()
	sleepUntil(a.p.Breaker().OpenUntil)
	if _, err := a.p.Get(t.Context(), "acme", "acc"); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, gobreaker.StateClosed)

	// A trip recorded while b is cut off from Redis: b misses the notice, and reads the
	// trip when its subscription is re-established.
	proxy.cut()
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	if err := a.rdb.Set(t.Context(), a.shared.keys.breaker("portfolio"), until.UnixMilli(), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // b's subscription notices the cut
	if got := b.p.BreakerState(); got != gobreaker.StateClosed {
		t.Fatalf("b while cut off: %v", got)
	}
	proxy.restore()
	waitState(t, b, gobreaker.StateOpen)
	if got := b.p.Breaker().OpenUntil; !got.Equal(until) {
		t.Errorf("b open until %v, want %v", got, until)
	}
}

// proxy forwards TCP connections to a target until cut: then it drops them all and
// closes new ones at once, until restored.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		p.wg.Go(func() { pipe(up, c) })
		p.wg.Go(func() { pipe(c, up) })
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// A downstream that refuses connections (nothing listens) trips the breakers like a 503:
// the calls are unprocessed, and the other replica stops calling too.
func TestSharedConnectionRefused(t *testing.T) {
	t.Parallel()
	_, opts := sharedSetup(t)
	const nowhere = "http://127.0.0.1:1" // nothing listens on port 1
	a := newReplica(t, "a", opts, nowhere)
	b := newReplica(t, "b", opts, nowhere)
	for range 4 {
		_, err := a.p.Get(t.Context(), "acme", "acc")
		if !IsTransient(err) || !Unprocessed(err) {
			t.Fatalf("err = %v, want a transient, unprocessed refusal", err)
		}
	}
	waitState(t, a, gobreaker.StateOpen)
	waitState(t, b, gobreaker.StateOpen)
	_, err := b.p.Get(t.Context(), "acme", "acc")
	if _, ok := Postpone(err); !ok || !Unprocessed(err) {
		t.Errorf("b: err = %v, want an unprocessed open breaker", err)
	}
	if st := b.p.Stats(); st.Sent != 0 || st.BreakerRejected != 1 {
		t.Errorf("b stats = %+v, want nothing sent and one rejection", st)
	}
}
