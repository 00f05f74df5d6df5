package loadtest

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	l := MergeLatencies(hundred[:50], hundred[50:])
	tests := []struct {
		name string
		l    Latencies
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", Latencies{7}, 99, 7},
		{"p50 of 1..100ms", l, 50, 50 * time.Millisecond},
		{"p99 of 1..100ms", l, 99, 99 * time.Millisecond},
		{"p100 of 1..100ms", l, 100, 100 * time.Millisecond},
		{"tiny p is the minimum", l, 0.001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.Percentile(tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestClosedLoop(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("boom")
	r := ClosedLoop(t.Context(), 4, 50*time.Millisecond, func(ctx context.Context, c int) error {
		if c < 0 || c >= 4 {
			t.Errorf("client index %d out of range", c)
		}
		if calls.Add(1)%5 == 0 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if r.Ops == 0 || r.Errors == 0 || !errors.Is(r.FirstErr, boom) {
		t.Fatalf("ops %d errors %d first %v: want both counted and the first error kept", r.Ops, r.Errors, r.FirstErr)
	}
	if got := int64(r.Ops + r.Errors); got != calls.Load() {
		t.Errorf("ops+errors = %d, want %d calls", got, calls.Load())
	}
	if len(r.Latencies) != r.Ops || r.Latencies.Percentile(1) < time.Millisecond {
		t.Errorf("latencies: %d samples, min %v; want one per success, each ≥ 1ms", len(r.Latencies), r.Latencies.Percentile(1))
	}
	if r.Elapsed < 50*time.Millisecond {
		t.Errorf("elapsed %v, want at least the duration", r.Elapsed)
	}
}

func TestOpenLoop(t *testing.T) {
	var seen [50]atomic.Bool
	r := OpenLoop(t.Context(), 1000, 50*time.Millisecond, func(ctx context.Context, n int) error {
		if seen[n].Swap(true) {
			t.Errorf("call %d made twice", n)
		}
		time.Sleep(5 * time.Millisecond) // slower than the arrivals: they must not wait
		return nil
	})
	if r.Ops != 50 || r.Errors != 0 {
		t.Fatalf("ops %d errors %d, want 50 calls at 1000/s for 50ms", r.Ops, r.Errors)
	}
	for i := range seen {
		if !seen[i].Load() {
			t.Errorf("call %d never made", i)
		}
	}
	// Closed-loop, 5ms calls would take 250ms; open-loop they overlap.
	if r.Elapsed > 200*time.Millisecond {
		t.Errorf("elapsed %v: arrivals waited for earlier calls", r.Elapsed)
	}
}

func TestOpenLoopStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := OpenLoop(ctx, 100, time.Hour, func(context.Context, int) error { return nil })
	if time.Since(start) > 2*time.Second || r.Ops == 0 {
		t.Errorf("ran %v with %d calls; want a few calls, then a stop when ctx ends", time.Since(start), r.Ops)
	}
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name string
		c    Check
		want string
	}{
		{"ratio met", AtLeast("r", 0.5, 0.4, "%.2f"), Pass},
		{"ratio equal", AtLeast("r", 0.4, 0.4, "%.2f"), Pass},
		{"ratio missed", AtLeast("r", 0.3, 0.4, "%.2f"), Miss},
		{"at most met", AtMost("c", 50, 50, "%.1f"), Pass},
		{"at most missed", AtMost("c", 50.1, 50, "%.1f"), Miss},
		{"ratio of nothing", AtLeast("r", Ratio(1, 0), 0.4, "%.2f"), Miss},
		{"latency met", Under("p", 19*time.Millisecond, 20*time.Millisecond), Pass},
		{"latency equal misses", Under("p", 20*time.Millisecond, 20*time.Millisecond), Miss},
		{"latency unmeasured", Under("p", 0, 20*time.Millisecond), Miss},
		{"info", Info("i", "x"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.c.Verdict != tt.want {
				t.Errorf("verdict %q, want %q (%+v)", tt.c.Verdict, tt.want, tt.c)
			}
		})
	}
	if !math.IsNaN(Ratio(1, 0)) || Ratio(1, 4) != 0.25 {
		t.Error("Ratio")
	}
}

func TestReportWrite(t *testing.T) {
	run := Run{Ops: 100, Elapsed: time.Second, Latencies: MergeLatencies([]time.Duration{time.Millisecond, 3 * time.Millisecond})}
	r := Report{
		Title:  "load",
		Notes:  []string{"2 CPUs"},
		Rows:   []Row{RowOf("gin no-op POST", "req/s", "request", run)},
		Checks: []Check{AtLeast("accept ÷ gin", 0.3, 0.4, "%.2f"), Info("workers", "64")},
	}
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"load\n", "2 CPUs", "gin no-op POST", "100 req/s", "1.00ms", "3.00ms", "accept ÷ gin", "≥ 0.40", "MISS", "workers"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if got := r.Missed(); len(got) != 1 || got[0] != "accept ÷ gin" {
		t.Errorf("Missed() = %v", got)
	}
}
