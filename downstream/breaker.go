package downstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// maxProbeWait is the RetryAfter of a call rejected because the half-open breaker's probes
// are taken: a probe answers within about that time, or the next one is due.
const maxProbeWait = time.Second

// breaker is the circuit breaker of one downstream in this process: a gobreaker
// CircuitBreaker, the time until which it is open (which gobreaker does not expose), and,
// with a [Shared], what the other processes learnt.
//
// Without Shared, gobreaker decides alone: it trips on ConsecutiveFailures failed attempts
// in a row or on the failure ratio of its rolling window, stays open for OpenTimeout, then lets HalfOpenProbes probes through.
//
// With Shared, a local trip is recorded in Redis and published; a trip of another process
// arrives as remoteOpen and rejects calls until its open-until time (forcedUntil). From a
// trip anywhere until a good probe the breaker is in the shared half-open phase: once the
// open time has passed, a call goes out only as a probe, under the cluster's probe lock.
// The lock is taken only in that phase; a closed breaker never touches Redis.
//
// Lock order: gobreaker's lock, then mu (gobreaker calls onStateChange under its lock).
// Nothing calls into gobreaker while holding mu.
type breaker struct {
	name     string
	cfg      BreakerConfig
	probeTTL time.Duration // the probe lock's TTL: longer than one attempt
	settings gobreaker.Settings
	cb       atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	log      *slog.Logger
	hook     func(name string, from, to gobreaker.State)
	shared   *Shared

	mu          sync.Mutex
	openUntil   time.Time // set while gobreaker is open
	forcedUntil time.Time // set by ForceOpenUntil and by trips of other processes
	halfOpen    bool      // the shared half-open phase (with shared only)
	probing     int       // probes of this process in flight
	probeOK     int       // good probes of this process in this phase
	acquiring   bool      // a call is taking the probe lock
	busyUntil   time.Time // another process holds the probe lock until about then
	lastFailure error     // the last failed attempt, for the log of a trip
}

func newBreaker(name string, cfg Config) *breaker {
	bc := cfg.Breaker
	b := &breaker{
		name:     name,
		cfg:      bc,
		probeTTL: cfg.Timeout + time.Second,
		log:      cfg.Logger,
		hook:     cfg.OnStateChange,
		shared:   cfg.Shared,
	}
	b.settings = gobreaker.Settings{
		Name:         name,
		MaxRequests:  uint32(bc.HalfOpenProbes),
		Interval:     bc.Interval,
		BucketPeriod: bc.Interval / 10,
		Timeout:      bc.OpenTimeout,
		// A run of failures trips at once; otherwise the ratio of the window decides.
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= uint32(bc.ConsecutiveFailures) {
				return true
			}
			done := c.TotalSuccesses + c.TotalFailures
			return done >= uint32(bc.MinRequests) &&
				float64(c.TotalFailures) >= bc.FailureRatio*float64(done)
		},
		OnStateChange: b.onStateChange,
		// Only failures of the downstream count: business answers and our own mistakes
		// (4xx) are successes, and a caller that gave up tells nothing.
		IsSuccessful: goodAnswer,
		IsExcluded:   func(err error) bool { return errors.Is(err, errCallerDone) },
	}
	b.cb.Store(gobreaker.NewCircuitBreaker[struct{}](b.settings))
	if b.shared != nil {
		b.shared.register(b)
	}
	return b
}

// goodAnswer reports whether an attempt's error says the downstream works.
func goodAnswer(err error) bool { return err == nil || !IsTransient(err) }

// onStateChange runs under gobreaker's lock.
func (b *breaker) onStateChange(name string, from, to gobreaker.State) {
	var publishOpen, publishClosed bool
	b.mu.Lock()
	switch to {
	case gobreaker.StateOpen:
		b.openUntil = time.Now().Add(b.cfg.OpenTimeout)
		if b.shared != nil {
			b.halfOpen, b.probeOK, publishOpen = true, 0, true
		}
	case gobreaker.StateClosed:
		b.openUntil = time.Time{}
		if b.shared != nil && b.halfOpen {
			b.halfOpen, b.probeOK, publishClosed = false, 0, true
		}
	default:
		b.openUntil = time.Time{}
	}
	until, cause := b.openUntil, b.lastFailure
	b.mu.Unlock()

	attrs := []any{"downstream", name, "from", from.String(), "to", to.String()}
	if !until.IsZero() {
		attrs = append(attrs, "open_until", until.UTC())
		if cause != nil {
			attrs = append(attrs, "last_failure", cause.Error())
		}
	}
	b.log.Warn("downstream breaker state changed", attrs...)
	if b.hook != nil {
		b.hook(name, from, to)
	}
	switch {
	case publishOpen:
		b.shared.publishOpen(name, until)
	case publishClosed:
		b.shared.publishClosed(name)
	}
}

// noteFailure records a failed attempt, before gobreaker counts it.
func (b *breaker) noteFailure(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastFailure = err
}

// openUntilLocked is the time until which calls are rejected, or zero. Like gobreaker, the
// breaker is open up to and including that instant.
func (b *breaker) openUntilLocked(now time.Time) time.Time {
	until := b.forcedUntil
	if b.openUntil.After(until) {
		until = b.openUntil
	}
	if until.Before(now) {
		return time.Time{}
	}
	return until
}

// OpenUntil returns the time until which the breaker rejects calls, or the zero time when
// it does not.
func (b *breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntilLocked(time.Now())
}

// ForceOpenUntil makes the breaker reject calls until t, whatever gobreaker's own state;
// after t, gobreaker's state rules again.
func (b *breaker) ForceOpenUntil(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forcedUntil = t
}

// State returns the breaker's state as this process sees it.
func (b *breaker) State() gobreaker.State {
	b.mu.Lock()
	open := !b.openUntilLocked(time.Now()).IsZero()
	half := b.shared != nil && b.halfOpen
	b.mu.Unlock()
	switch {
	case open:
		return gobreaker.StateOpen
	case half:
		return gobreaker.StateHalfOpen
	}
	return b.cb.Load().State()
}

// BreakerStatus is the state of a downstream's breaker as one process sees it.
type BreakerStatus struct {
	// Downstream is "portfolio" or "execution".
	Downstream string
	// State is closed, open or half-open.
	State gobreaker.State
	// OpenUntil is when the open breaker lets a probe through; zero unless open.
	OpenUntil time.Time
}

func (b *breaker) status() BreakerStatus {
	until := b.OpenUntil()
	st := BreakerStatus{Downstream: b.name, State: b.State(), OpenUntil: until}
	if st.State != gobreaker.StateOpen {
		st.OpenUntil = time.Time{}
	}
	return st
}

func (b *breaker) openError(wait time.Duration) *OpenError {
	return &OpenError{Downstream: b.name, RetryAfter: max(wait, time.Millisecond)}
}

// probeWaitLocked is how long a call rejected for want of a probe should wait.
func (b *breaker) probeWaitLocked(now time.Time) time.Duration {
	if b.busyUntil.After(now) {
		return min(maxProbeWait, b.busyUntil.Sub(now))
	}
	return maxProbeWait
}

// allow returns an *OpenError while the breaker is open, without taking a slot in it. It
// never touches Redis.
func (b *breaker) allow() error {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if until := b.openUntilLocked(now); !until.IsZero() {
		return b.openError(until.Sub(now))
	}
	return nil
}

// admit decides whether a call may go out: it returns an *OpenError when not, and whether
// the call is a probe of the shared half-open phase (then run must be told its outcome).
// Only in that phase does it talk to Redis, to take the probe lock.
func (b *breaker) admit(ctx context.Context) (probe bool, err error) {
	now := time.Now()
	b.mu.Lock()
	if until := b.openUntilLocked(now); !until.IsZero() {
		b.mu.Unlock()
		return false, b.openError(until.Sub(now))
	}
	if b.shared == nil || !b.halfOpen {
		b.mu.Unlock()
		return false, nil
	}
	if b.probing >= b.cfg.HalfOpenProbes || b.acquiring || now.Before(b.busyUntil) {
		defer b.mu.Unlock()
		return false, b.openError(b.probeWaitLocked(now))
	}
	b.acquiring = true
	b.mu.Unlock()

	got, wait, err := b.shared.takeProbe(ctx, b.name, b.probeTTL)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.acquiring = false
	switch {
	case err != nil && ctx.Err() != nil:
		return false, fmt.Errorf("%w: %w", errCallerDone, ctx.Err())
	case err != nil:
		// Without Redis the breakers decide alone: this one probes.
		b.log.Warn("shared breaker: probe lock unavailable; probing without it", "downstream", b.name, "err", err)
	case !got:
		b.busyUntil = now.Add(wait)
		return false, b.openError(b.probeWaitLocked(now))
	}
	if !b.halfOpen {
		// A good probe elsewhere closed the breaker meanwhile: an ordinary call.
		b.shared.releaseProbe(b.name)
		return false, nil
	}
	b.probing++
	return true, nil
}

// run calls fn through gobreaker, or returns an *OpenError without calling it. probe says
// whether admit let the call through as a probe.
func (b *breaker) run(probe bool, fn func() error) error {
	_, err := b.cb.Load().Execute(func() (struct{}, error) { return struct{}{}, fn() })
	rejected := errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
	if probe {
		b.probeDone(err, rejected)
	}
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		wait := maxProbeWait
		if until := b.OpenUntil(); !until.IsZero() {
			wait = time.Until(until)
		}
		return b.openError(wait)
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return b.openError(maxProbeWait)
	}
	return err
}

// probeDone takes the outcome of a probe of the shared half-open phase: a good answer
// (after HalfOpenProbes of them) closes the breaker everywhere, a failure opens it again
// everywhere, and a probe that did not go out or whose caller gave up tells nothing.
func (b *breaker) probeDone(err error, rejected bool) {
	from := b.State()
	now := time.Now()
	var release, closed, opened bool
	var until time.Time
	b.mu.Lock()
	b.probing--
	switch {
	case rejected || errors.Is(err, errCallerDone):
		release = b.probing == 0
	case goodAnswer(err):
		if b.halfOpen {
			b.probeOK++
			if b.probeOK >= b.cfg.HalfOpenProbes {
				b.halfOpen, b.probeOK, b.forcedUntil, closed = false, 0, time.Time{}, true
			}
		}
	default:
		b.probeOK = 0
		// When gobreaker tripped on this failure, onStateChange has recorded the trip.
		if b.openUntilLocked(now).IsZero() {
			until = now.Add(b.cfg.OpenTimeout)
			b.forcedUntil, b.halfOpen, opened = until, true, true
		}
	}
	b.mu.Unlock()

	switch {
	case release:
		b.shared.releaseProbe(b.name)
	case closed:
		b.log.Info("downstream breaker closed after a good probe", "downstream", b.name)
		b.shared.publishClosed(b.name)
	case opened:
		b.log.Warn("downstream breaker opened again after a failed probe", "downstream", b.name, "open_until", until.UTC(), "err", err)
		b.shared.publishOpen(b.name, until)
	}
	b.changed(from)
}

// remoteOpen applies a trip recorded by any process (this one included): calls are
// rejected until then, and the breaker is half-open for the cluster afterwards.
func (b *breaker) remoteOpen(until time.Time) {
	from := b.State()
	b.mu.Lock()
	if until.After(b.forcedUntil) {
		b.forcedUntil, b.probeOK = until, 0
	}
	b.halfOpen = true
	b.mu.Unlock()
	b.changed(from)
}

// remoteClosed applies a good probe of any process. A gobreaker of this process still
// half-open after its own trip is replaced by a closed one: the cluster's probe stands for
// its probes too. (One still open has tripped since, on newer evidence: it stays.)
func (b *breaker) remoteClosed() {
	from := b.State()
	b.mu.Lock()
	b.halfOpen, b.probeOK, b.forcedUntil = false, 0, time.Time{}
	b.mu.Unlock()
	if cb := b.cb.Load(); cb.State() == gobreaker.StateHalfOpen {
		b.cb.CompareAndSwap(cb, gobreaker.NewCircuitBreaker[struct{}](b.settings))
	}
	b.changed(from)
}

// remoteAbsent applies the absence of a recorded trip: a close notice was missed, or the
// trip could not be recorded. Once its open time is over, the breaker leaves the shared
// half-open phase (gobreaker's own state rules again).
func (b *breaker) remoteAbsent() {
	from := b.State()
	b.mu.Lock()
	if b.halfOpen && b.probing == 0 && b.openUntilLocked(time.Now()).IsZero() {
		b.halfOpen, b.probeOK = false, 0
	}
	b.mu.Unlock()
	b.changed(from)
}

// changed tells the hook about a change the cluster caused.
func (b *breaker) changed(from gobreaker.State) {
	if to := b.State(); to != from && b.hook != nil {
		b.hook(b.name, from, to)
	}
}
