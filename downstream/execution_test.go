package downstream

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestExecute(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	ctx := t.Context()

	want := Fill{ExecutionID: "e1", Symbol: "AAPL", Side: "buy", Quantity: 5, Price: 100, FilledAt: fixedNow}
	for range 2 {
		fill, err := tb.execution.Execute(ctx, order("e1", "AAPL"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, fill); diff != "" {
			t.Errorf("fill (-want +got):\n%s", diff)
		}
	}
	if got := tb.sim.Executions("e1"); got != 1 {
		t.Errorf("Executions = %d, want 1", got)
	}

	limit := 12.5
	req := order("e2", "AAPL")
	req.LimitPrice = &limit
	if fill, err := tb.execution.Execute(ctx, req); err != nil || fill.Price != 12.5 {
		t.Errorf("limit order: %+v, %v", fill, err)
	}
}

func TestExecuteRefused(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	tb.setFaults(t, sim.Execution, sim.Faults{RefuseSymbols: []string{"BAD"}})

	_, err := tb.execution.Execute(t.Context(), order("e1", "BAD"))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
	re, ok := errors.AsType[*RefusedError](err)
	if !ok || re.Reason != "symbol BAD is not tradable" {
		t.Errorf("RefusedError = %+v", re)
	}
	if IsTransient(err) {
		t.Error("a refusal is transient")
	}
	if got := tb.sim.ExecutionRequests("e1"); got != 1 {
		t.Errorf("ExecutionRequests = %d, want 1: a business answer is not retried", got)
	}
}

func TestClientErrorIsPermanent(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	req := order("e1", "AAPL")
	req.Side = "hold"
	_, err := tb.execution.Execute(t.Context(), req)
	se, ok := errors.AsType[*StatusError](err)
	if !ok || se.Code != 400 || se.Downstream != "execution" {
		t.Fatalf("err = %v, want a 400 StatusError", err)
	}
	if IsTransient(err) {
		t.Error("a 400 is transient")
	}
	if got := tb.sim.ExecutionRequests("e1"); got != 1 {
		t.Errorf("ExecutionRequests = %d, want 1", got)
	}
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	for _, mode := range []sim.GarbageMode{
		sim.GarbageInvalidJSON, sim.GarbageWrongContentType, sim.GarbageMissingField, sim.GarbageHuge,
	} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tb := setup(t, nil, func(c *Config) {
				c.Breaker.MinRequests, c.Breaker.ConsecutiveFailures = 100, 100
				c.MaxBodyBytes = 64 << 10 // the huge answer is 100 MiB
			})
			tb.setFaults(t, sim.Execution, sim.Faults{Garbage: mode})
			tb.setFaults(t, sim.Portfolio, sim.Faults{Garbage: mode})
			ctx := t.Context()

			_, err := tb.execution.Execute(ctx, order("e1", "AAPL"))
			if !errors.Is(err, ErrBadResponse) || !IsTransient(err) {
				t.Errorf("Execute: err = %v, want a transient ErrBadResponse", err)
			}
			// A bad answer is retried; the execution happened once.
			if got := tb.sim.ExecutionRequests("e1"); got != 3 {
				t.Errorf("ExecutionRequests = %d, want 3", got)
			}
			if got := tb.sim.Executions("e1"); got != 1 {
				t.Errorf("Executions = %d, want 1", got)
			}

			if _, err := tb.portfolio.Get(ctx, "acme", "acc"); !errors.Is(err, ErrBadResponse) {
				t.Errorf("Get: err = %v, want ErrBadResponse", err)
			}
			if err := tb.portfolio.Reserve(ctx, Reservation{Tenant: "acme", OrderID: "o1", ID: "r1", AccountID: "acc", Amount: 1}); !errors.Is(err, ErrBadResponse) {
				t.Errorf("Reserve: err = %v, want ErrBadResponse", err)
			}
			if err := tb.portfolio.Release(ctx, ReleaseRequest{Tenant: "acme", OrderID: "o1", ReservationID: "r1"}); !errors.Is(err, ErrBadResponse) {
				t.Errorf("Release: err = %v, want ErrBadResponse", err)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, func(c *Config) { c.MaxBodyBytes = 32; c.MaxAttempts = 1 })
	_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if !errors.Is(err, ErrBadResponse) {
		t.Errorf("err = %v, want ErrBadResponse", err)
	}
}

func TestConnectionReset(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, func(c *Config) { c.MaxAttempts = 2 })
	tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.OutageReset})

	_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if err == nil || !IsTransient(err) || errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want a transient connection error", err)
	}
	if got := tb.sim.Executions("e1"); got != 0 {
		t.Errorf("Executions = %d, want 0", got)
	}
	if got := tb.sim.ExecutionRequests("e1"); got < 2 {
		t.Errorf("ExecutionRequests = %d, want at least 2 (retried)", got)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.MaxAttempts = 2 })
	tb.setFaults(t, sim.Execution, sim.Faults{Latency: 10 * time.Second})

	start := time.Now()
	_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if !errors.Is(err, context.DeadlineExceeded) || !IsTransient(err) {
		t.Fatalf("err = %v, want a transient deadline", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("took %v, want about 2 × 50ms", d)
	}
	if got := tb.sim.ExecutionRequests("e1"); got != 2 {
		t.Errorf("ExecutionRequests = %d, want 2", got)
	}
	if got := tb.sim.Executions("e1"); got != 0 {
		t.Errorf("Executions = %d, want 0", got)
	}
}

func TestSlowDrip(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.MaxAttempts = 1 })
	tb.setFaults(t, sim.Execution, sim.Faults{SlowDrip: 20 * time.Millisecond})

	_, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if !IsTransient(err) {
		t.Fatalf("err = %v, want a transient timeout", err)
	}
	// The execution happened; its answer was lost. Repeating the id gets it.
	tb.sim.ClearFaults()
	fill, err := tb.execution.Execute(t.Context(), order("e1", "AAPL"))
	if err != nil || fill.ExecutionID != "e1" {
		t.Fatalf("repeat: %+v, %v", fill, err)
	}
	if got := tb.sim.Executions("e1"); got != 1 {
		t.Errorf("Executions = %d, want 1", got)
	}
}

func FuzzDecodeFill(f *testing.F) {
	for _, seed := range []string{
		`{"execution_id":"e1","status":"filled","symbol":"AAPL","side":"buy","quantity":5,"price":100,"filled_at":"2026-01-02T03:04:05Z"}`,
		`{"execution_id":"e1","status":"filled","quantity":5,"price":100}`,
		`{"execution_id":"e1","status":"filled","quantity":5}`,
		`{"execution_id":"","status":"filled","quantity":5,"price":1}`,
		`{"execution_id":"e1","status":"rejected","quantity":5,"price":1}`,
		`{"execution_id":"e1","status":"filled","quantity":-5,"price":1e308}`,
		`{"execution_id":"e1","status":"filled","quantity":5,"price":1,"filled_at":"yesterday"}`,
		`{"execution_id":null,"price":null}`,
		`{"execution_id":`,
		`[]`, `null`, `"x"`, ``, `{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fill, err := decodeFill(data)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, not ErrBadResponse", err)
			}
			if fill != (Fill{}) {
				t.Fatalf("fill %+v with error %v", fill, err)
			}
			return
		}
		if fill.ExecutionID == "" || !(fill.Quantity > 0) || !(fill.Price > 0) {
			t.Fatalf("accepted an incomplete fill %+v from %q", fill, data)
		}
	})
}

func BenchmarkExecute(b *testing.B) {
	tb := setup(b, nil, nil)
	ctx := b.Context()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		if _, err := tb.execution.Execute(ctx, order("bench-"+strconv.Itoa(n), "AAPL")); err != nil {
			b.Fatal(err)
		}
	}
}
