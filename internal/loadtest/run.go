package loadtest

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Op is one operation of a load phase: an HTTP request, an enqueue. n is the
// client's index in a closed loop and the call's sequence number in an open
// loop. An error counts the call as failed; its latency is not recorded.
type Op func(ctx context.Context, n int) error

// Run is the outcome of one load phase.
type Run struct {
	// Ops is the number of calls that succeeded, Errors of those that failed.
	Ops, Errors int
	// FirstErr is the first error seen, if any.
	FirstErr error
	// Elapsed is the time from the start of the phase until the last call ended.
	Elapsed time.Duration
	// Latencies of the calls that succeeded, sorted.
	Latencies Latencies
}

// Rate is the successful calls per second.
func (r Run) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Latencies is a sorted sample of durations.
type Latencies []time.Duration

// MergeLatencies joins per-goroutine samples into one sorted sample.
func MergeLatencies(parts ...[]time.Duration) Latencies {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	all := make([]time.Duration, 0, n)
	for _, p := range parts {
		all = append(all, p...)
	}
	slices.Sort(all)
	return all
}

// Percentile is the nearest-rank percentile p (0 < p ≤ 100) of the sorted
// sample; zero for an empty one.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(l))/100-1e-9)) - 1
	return l[min(max(rank, 0), len(l)-1)]
}

// errorLog counts errors and keeps the first.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first error
}

func (e *errorLog) add(err error) {
	e.mu.Lock()
	e.n++
	if e.first == nil {
		e.first = err
	}
	e.mu.Unlock()
}

// ClosedLoop runs clients goroutines for d, each calling op back to back: a
// new call starts when the previous one ended, as a pool of busy clients
// does. Latency is the time of one call.
func ClosedLoop(ctx context.Context, clients int, d time.Duration, op Op) Run {
	parts := make([][]time.Duration, clients)
	var errs errorLog
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := op(ctx, c); err != nil {
					errs.add(err)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			parts[c] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	lat := MergeLatencies(parts...)
	return Run{Ops: len(lat), Errors: errs.n, FirstErr: errs.first, Elapsed: elapsed, Latencies: lat}
}

// OpenLoop calls op rate times a second for d, each call in its own
// goroutine whether or not the earlier ones ended: arrivals do not slow
// down when the system does. A ticker paces the arrivals; a tick that comes
// late starts every call that was due, so the rate holds. Latency counts
// from when a call was due, so a late start counts against the system.
func OpenLoop(ctx context.Context, rate float64, d time.Duration, op Op) Run {
	n := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	lat := make([]time.Duration, n)
	ok := make([]bool, n)
	var errs errorLog
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	i := 0
schedule:
	for i < n {
		now := time.Now()
		for ; i < n; i++ {
			due := start.Add(time.Duration(i) * interval)
			if due.After(now) {
				break
			}
			seq := i
			wg.Go(func() {
				if err := op(ctx, seq); err != nil {
					errs.add(err)
					return
				}
				lat[seq], ok[seq] = time.Since(due), true
			})
		}
		if i == n {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			break schedule
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	done := make([]time.Duration, 0, n)
	for j := range i {
		if ok[j] {
			done = append(done, lat[j])
		}
	}
	sorted := MergeLatencies(done)
	return Run{Ops: len(sorted), Errors: errs.n, FirstErr: errs.first, Elapsed: elapsed, Latencies: sorted}
}
