package downstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sony/gobreaker/v2"

	"github.com/asyncgate/asyncgate/internal/sim"
)

// These tests run in synctest bubbles against the in-memory transport: time is fake, so
// waiting for a breaker's OpenTimeout or a Retry-After takes no real time.

func TestBreakerOpensAndRecovers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		type change struct{ from, to gobreaker.State }
		var (
			mu      sync.Mutex
			changes []change
		)
		tb := setupInMemory(t, nil, func(c *Config) {
			c.MaxAttempts = 1
			c.OnStateChange = func(name string, from, to gobreaker.State) {
				if name != "portfolio" {
					t.Errorf("OnStateChange name = %q", name)
				}
				mu.Lock()
				changes = append(changes, change{from, to})
				mu.Unlock()
			}
		})
		tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
		ctx := t.Context()

		for i := range 4 {
			_, err := tb.portfolio.Get(ctx, "acme", "acc")
			if se, ok := errors.AsType[*StatusError](err); !ok || se.Code != 503 {
				t.Fatalf("call %d: err = %v, want a 503", i, err)
			}
		}
		if got := tb.portfolio.BreakerState(); got != gobreaker.StateOpen {
			t.Fatalf("state after 4 failures = %v, want open", got)
		}

		_, err := tb.portfolio.Get(ctx, "acme", "acc")
		oe, ok := errors.AsType[*OpenError](err)
		if !ok || !errors.Is(err, ErrBreakerOpen) || !IsTransient(err) {
			t.Fatalf("err = %v, want an OpenError", err)
		}
		if oe.Downstream != "portfolio" || oe.RetryAfter != 5*time.Second {
			t.Errorf("OpenError = %+v, want portfolio, 5s", oe)
		}
		if d, ok := RetryAfter(err); !ok || d != 5*time.Second {
			t.Errorf("RetryAfter = %v, %v", d, ok)
		}
		if got := tb.sim.Stats().PortfolioRequests; got != 4 {
			t.Errorf("PortfolioRequests = %d, want 4: an open breaker must not call", got)
		}
		// The execution breaker is another one.
		if got := tb.execution.BreakerState(); got != gobreaker.StateClosed {
			t.Errorf("execution breaker = %v", got)
		}

		tb.sim.ClearFaults()
		time.Sleep(oe.RetryAfter + time.Nanosecond)
		if got := tb.portfolio.BreakerState(); got != gobreaker.StateHalfOpen {
			t.Fatalf("state after OpenTimeout = %v, want half-open", got)
		}
		if _, err := tb.portfolio.Get(ctx, "acme", "acc"); err != nil {
			t.Fatalf("probe: %v", err)
		}
		if got := tb.portfolio.BreakerState(); got != gobreaker.StateClosed {
			t.Errorf("state after a good probe = %v, want closed", got)
		}

		mu.Lock()
		defer mu.Unlock()
		want := []change{
			{gobreaker.StateClosed, gobreaker.StateOpen},
			{gobreaker.StateOpen, gobreaker.StateHalfOpen},
			{gobreaker.StateHalfOpen, gobreaker.StateClosed},
		}
		if diff := cmp.Diff(want, changes, cmp.AllowUnexported(change{})); diff != "" {
			t.Errorf("state changes (-want +got):\n%s", diff)
		}
	})
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := setupInMemory(t, nil, func(c *Config) { c.MaxAttempts = 1 })
		tb.setFaults(t, sim.Execution, sim.Faults{ErrorRate: 1})
		ctx := t.Context()
		for range 4 {
			_, _ = tb.execution.Execute(ctx, order("e1", "AAPL"))
		}
		time.Sleep(5*time.Second + time.Nanosecond)
		if _, err := tb.execution.Execute(ctx, order("e1", "AAPL")); errors.Is(err, ErrBreakerOpen) || err == nil {
			t.Fatalf("probe: err = %v, want the downstream's 503", err)
		}
		if got := tb.execution.BreakerState(); got != gobreaker.StateOpen {
			t.Errorf("state after a failed probe = %v, want open", got)
		}
		if got := tb.sim.ExecutionRequests("e1"); got != 5 {
			t.Errorf("ExecutionRequests = %d, want 5", got)
		}
	})
}

func TestBreakerStopsRetries(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		tb := setupInMemory(t, nil, func(c *Config) {
			c.MaxAttempts = 10
			c.Breaker.MinRequests = 2
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		tb.setFaults(t, sim.Execution, sim.Faults{ErrorRate: 1})
		_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
		if !errors.Is(err, ErrBreakerOpen) || !Unprocessed(err) {
			t.Fatalf("err = %v, want an unprocessed ErrBreakerOpen", err)
		}
		if want := "last failure: execution: unexpected status 503"; !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to name the failure (%q)", err, want)
		}
		if !strings.Contains(logs.String(), `msg="downstream breaker state changed" downstream=execution from=closed to=open`) ||
			!strings.Contains(logs.String(), `last_failure="execution: unexpected status 503"`) {
			t.Errorf("the trip's log line lacks its cause:\n%s", logs.String())
		}
		if got := tb.sim.ExecutionRequests("e1"); got != 2 {
			t.Errorf("ExecutionRequests = %d, want 2: no attempt once the breaker opened", got)
		}
	})
}

func TestBusinessAnswersDoNotTrip(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	tb.setFaults(t, sim.Execution, sim.Faults{RefuseSymbols: []string{"BAD"}})
	tb.sim.SetBalance("poor", 0)
	ctx := t.Context()

	for i := range 10 {
		id := fmt.Sprint(i)
		if _, err := tb.execution.Execute(ctx, order(id, "BAD")); !errors.Is(err, ErrRefused) {
			t.Fatalf("Execute: %v", err)
		}
		bad := order("bad"+id, "AAPL")
		bad.Quantity = -1
		if _, err := tb.execution.Execute(ctx, bad); err == nil {
			t.Fatal("Execute of a bad order succeeded")
		}
		if err := tb.portfolio.Reserve(ctx, Reservation{Tenant: "acme", OrderID: "o1", ID: id, AccountID: "poor", Amount: 1}); !errors.Is(err, ErrInsufficientFunds) {
			t.Fatalf("Reserve: %v", err)
		}
	}
	if got := tb.execution.BreakerState(); got != gobreaker.StateClosed {
		t.Errorf("execution breaker = %v, want closed", got)
	}
	if got := tb.portfolio.BreakerState(); got != gobreaker.StateClosed {
		t.Errorf("portfolio breaker = %v, want closed", got)
	}
}

func TestCallerCancelDoesNotCount(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := setupInMemory(t, nil, func(c *Config) { c.Breaker.MinRequests = 1 })
		tb.setFaults(t, sim.Portfolio, sim.Faults{Latency: time.Hour})

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := tb.portfolio.Get(ctx, "acme", "acc")
			errc <- err
		}()
		synctest.Wait() // the call is in flight
		cancel()
		err := <-errc
		if !errors.Is(err, context.Canceled) || IsTransient(err) {
			t.Fatalf("err = %v, want a permanent context.Canceled", err)
		}
		if got := tb.portfolio.BreakerState(); got != gobreaker.StateClosed {
			t.Errorf("state = %v, want closed", got)
		}
		if c := tb.portfolio.c.breaker.cb.Load().Counts(); c.TotalFailures != 0 || c.TotalExclusions != 1 {
			t.Errorf("breaker counts = %+v, want one exclusion", c)
		}
		if got := tb.sim.Stats().PortfolioRequests; got != 1 {
			t.Errorf("PortfolioRequests = %d, want 1", got)
		}
	})
}

func TestBreakerForceOpenUntil(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := setupInMemory(t, nil, nil)
		b := tb.execution.c.breaker
		if !b.OpenUntil().IsZero() {
			t.Fatalf("OpenUntil = %v, want zero", b.OpenUntil())
		}
		until := time.Now().Add(time.Minute)
		b.ForceOpenUntil(until)
		if got := b.OpenUntil(); !got.Equal(until) {
			t.Errorf("OpenUntil = %v, want %v", got, until)
		}
		if got := tb.execution.BreakerState(); got != gobreaker.StateOpen {
			t.Errorf("state = %v, want open", got)
		}
		_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
		if d, ok := RetryAfter(err); !errors.Is(err, ErrBreakerOpen) || !ok || d != time.Minute {
			t.Errorf("err = %v (retry after %v), want open for 1m", err, d)
		}
		if got := tb.sim.ExecutionRequests("e1"); got != 0 {
			t.Errorf("ExecutionRequests = %d, want 0", got)
		}

		time.Sleep(time.Minute + time.Nanosecond)
		if _, err := tb.execution.Execute(t.Context(), order("e1", "AAPL")); err != nil {
			t.Errorf("after the forced time: %v", err)
		}
	})
}

func TestRetryThenSucceed(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(s *sim.Sim) http.Handler {
		return afterRequests(2, s, s.ClearFaults)
	}, nil)
	tb.setFaults(t, sim.Execution, sim.Faults{ErrorRate: 1})

	fill, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if err != nil {
		t.Fatal(err)
	}
	if fill.ExecutionID != "e1" {
		t.Errorf("fill = %+v", fill)
	}
	if got := tb.sim.ExecutionRequests("e1"); got != 3 {
		t.Errorf("ExecutionRequests = %d, want 3", got)
	}
	if got := tb.sim.Stats(); got.Faulted != 2 || got.Executions != 1 {
		t.Errorf("stats = %+v, want 2 faulted, 1 executed", got)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()

	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			tb := setupInMemory(t, func(s *sim.Sim) http.Handler {
				return afterRequests(1, s, s.ClearFaults)
			}, func(c *Config) { c.Budget = 3 * time.Second })
			tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.Outage503})

			start := time.Now()
			if _, err := tb.execution.Execute(t.Context(), order("e1", "AAPL")); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != time.Second {
				t.Errorf("took %v, want the 1s of Retry-After", d)
			}
			if got := tb.sim.ExecutionRequests("e1"); got != 2 {
				t.Errorf("ExecutionRequests = %d, want 2", got)
			}
		})
	})

	t.Run("beyond the budget", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			tb := setupInMemory(t, nil, func(c *Config) { c.Budget = 500 * time.Millisecond })
			tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.Outage503})

			start := time.Now()
			_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
			if d := time.Since(start); d != 0 {
				t.Errorf("took %v, want an answer at once", d)
			}
			if se, ok := errors.AsType[*StatusError](err); !ok || se.Code != 503 {
				t.Fatalf("err = %v, want a 503", err)
			}
			if d, ok := RetryAfter(err); !ok || d != time.Second {
				t.Errorf("RetryAfter = %v, %v; want 1s", d, ok)
			}
			if got := tb.sim.ExecutionRequests("e1"); got != 1 {
				t.Errorf("ExecutionRequests = %d, want 1", got)
			}
		})
	})
}

// gate is a handler that holds every request until opened, and counts those it holds.
type gate struct {
	next     http.Handler
	open     chan struct{}
	inFlight atomic.Int64
	peak     atomic.Int64
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	select {
	case <-g.open:
		g.next.ServeHTTP(w, r)
	case <-r.Context().Done():
	}
}

func TestBulkhead(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := &gate{open: make(chan struct{})}
		tb := setupInMemory(t, func(s *sim.Sim) http.Handler {
			g.next = s
			return g
		}, func(c *Config) {
			c.MaxConcurrent = 2
			c.BulkheadWait = time.Minute // the budget bounds it
		})

		const calls = 5
		errc := make(chan error, calls)
		for i := range calls {
			go func() {
				_, err := tb.execution.Execute(t.Context(), order(fmt.Sprint("e", i), "AAPL"))
				errc <- err
			}()
		}
		synctest.Wait() // every call is in flight or waiting for a slot
		if got := g.inFlight.Load(); got != 2 {
			t.Errorf("in flight = %d, want 2", got)
		}
		close(g.open)
		for range calls {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
		if got := g.peak.Load(); got != 2 {
			t.Errorf("peak in flight = %d, want 2", got)
		}
		if got := tb.sim.Stats().Executions; got != calls {
			t.Errorf("Executions = %d, want %d", got, calls)
		}
	})
}

func TestBulkheadFull(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := setupInMemory(t, nil, func(c *Config) {
			c.MaxConcurrent = 1
			c.Budget = 100 * time.Millisecond
			c.BulkheadWait = time.Hour // the budget bounds it
		})
		slots := tb.execution.c.slots
		slots <- struct{}{} // another call holds the only slot
		defer func() { <-slots }()

		start := time.Now()
		_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
		if !errors.Is(err, ErrBulkheadFull) || !IsTransient(err) {
			t.Errorf("err = %v, want a transient ErrBulkheadFull", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("waited %v, want the 100ms budget", d)
		}
		if got := tb.sim.ExecutionRequests("e1"); got != 0 {
			t.Errorf("ExecutionRequests = %d, want 0", got)
		}

		// A caller that gives up while waiting gets its own error back.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		_, err = tb.execution.Execute(ctx, order("e2", "AAPL"))
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBulkheadFull) {
			t.Errorf("err = %v, want the caller's deadline", err)
		}
	})
}

func TestBulkheadFailsFast(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		tb := setupInMemory(t, nil, func(c *Config) {
			c.MaxConcurrent = 1
			c.Timeout = 2 * time.Second
		})
		slots := tb.execution.c.slots
		slots <- struct{}{} // a slow call holds the only slot
		defer func() { <-slots }()

		start := time.Now()
		_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
		if d := time.Since(start); d != 0 {
			t.Errorf("waited %v, want no wait by default", d)
		}
		be, ok := errors.AsType[*BulkheadError](err)
		if !ok || !errors.Is(err, ErrBulkheadFull) || !IsTransient(err) || !Unprocessed(err) {
			t.Fatalf("err = %v, want an unprocessed BulkheadError", err)
		}
		if be.Downstream != "execution" || be.RetryAfter < 500*time.Millisecond || be.RetryAfter > time.Second {
			t.Errorf("BulkheadError = %+v, want a RetryAfter between 0.5s and 1s", be)
		}
		if d, ok := Postpone(err); !ok || d != be.RetryAfter {
			t.Errorf("Postpone = %v, %v", d, ok)
		}
		if got := tb.execution.Stats(); got.BulkheadRejected != 1 || got.Sent != 0 {
			t.Errorf("stats = %+v, want one bulkhead rejection and nothing sent", got)
		}
		if got := tb.sim.ExecutionRequests("e1"); got != 0 {
			t.Errorf("ExecutionRequests = %d, want 0", got)
		}
	})
}

// A downstream that dies after a busy healthy period: the window is full of successes, so
// the failure ratio alone would let hundreds of calls through before it trips (about 290
// in 3.5 s of a full execution outage, before consecutive failures counted). Failures in
// a row trip it: the calls that reach the dead downstream are at most the threshold plus
// the attempts already in flight.
func TestBreakerTripsOnConsecutiveFailures(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const threshold, callers = 5, 8
		tb := setupInMemory(t, nil, func(c *Config) {
			c.Breaker = BreakerConfig{ConsecutiveFailures: threshold} // the default ratio, window and minimum
		})
		ctx := t.Context()
		for range 300 {
			if _, err := tb.portfolio.Get(ctx, "acme", "acc"); err != nil {
				t.Fatal(err)
			}
		}
		before := tb.sim.Stats().PortfolioRequests
		tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range 100 {
					_, err := tb.portfolio.Get(ctx, "acme", "acc")
					if errors.Is(err, ErrBreakerOpen) {
						return
					}
				}
				t.Error("100 calls to a dead downstream and the breaker is still closed")
			})
		}
		wg.Wait()
		if got := tb.portfolio.BreakerState(); got != gobreaker.StateOpen {
			t.Fatalf("state = %v, want open", got)
		}
		wasted := tb.sim.Stats().PortfolioRequests - before
		t.Logf("calls that reached the dead downstream: %d (threshold %d, %d callers)", wasted, threshold, callers)
		if wasted > threshold+callers {
			t.Errorf("%d calls reached the dead downstream before the breaker opened, want at most %d", wasted, threshold+callers)
		}
	})
}
