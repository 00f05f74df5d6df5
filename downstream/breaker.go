package downstream

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breaker is the circuit breaker of one downstream in this process: a gobreaker
// CircuitBreaker plus the time until which it is open, which gobreaker does not expose.
//
// The open-until time is kept here, apart from gobreaker, so that replicas can later share
// it (through Redis, say): one that opens publishes OpenUntil, the others call
// ForceOpenUntil. Nothing does yet.
type breaker struct {
	name        string
	cb          *gobreaker.CircuitBreaker[struct{}]
	openTimeout time.Duration
	log         *slog.Logger
	hook        func(name string, from, to gobreaker.State)

	mu          sync.Mutex
	openUntil   time.Time // set while gobreaker is open
	forcedUntil time.Time // set by ForceOpenUntil
}

func newBreaker(name string, cfg BreakerConfig, log *slog.Logger, hook func(string, gobreaker.State, gobreaker.State)) *breaker {
	b := &breaker{name: name, openTimeout: cfg.OpenTimeout, log: log, hook: hook}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         name,
		MaxRequests:  uint32(cfg.HalfOpenProbes),
		Interval:     cfg.Interval,
		BucketPeriod: cfg.Interval / 10,
		Timeout:      cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			done := c.TotalSuccesses + c.TotalFailures
			return done >= uint32(cfg.MinRequests) &&
				float64(c.TotalFailures) >= cfg.FailureRatio*float64(done)
		},
		OnStateChange: b.onStateChange,
		// Only failures of the downstream count: business answers and our own mistakes
		// (4xx) are successes, and a caller that gave up tells nothing.
		IsSuccessful: func(err error) bool { return err == nil || !IsTransient(err) },
		IsExcluded:   func(err error) bool { return errors.Is(err, errCallerDone) },
	})
	return b
}

// onStateChange runs under gobreaker's lock.
func (b *breaker) onStateChange(name string, from, to gobreaker.State) {
	b.mu.Lock()
	if to == gobreaker.StateOpen {
		b.openUntil = time.Now().Add(b.openTimeout)
	} else {
		b.openUntil = time.Time{}
	}
	b.mu.Unlock()
	b.log.Warn("downstream breaker state changed", "downstream", name, "from", from.String(), "to", to.String())
	if b.hook != nil {
		b.hook(name, from, to)
	}
}

// OpenUntil returns the time until which the breaker rejects calls, or the zero time when
// it does not.
func (b *breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	until := b.forcedUntil
	if b.openUntil.After(until) {
		until = b.openUntil
	}
	// Like gobreaker, open up to and including that instant.
	if until.Before(time.Now()) {
		return time.Time{}
	}
	return until
}

// ForceOpenUntil makes the breaker reject calls until t, whatever gobreaker's own state;
// after t, gobreaker's state rules again.
func (b *breaker) ForceOpenUntil(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forcedUntil = t
}

// State returns the breaker's state.
func (b *breaker) State() gobreaker.State {
	if !b.OpenUntil().IsZero() {
		return gobreaker.StateOpen
	}
	return b.cb.State()
}

// allow returns an *OpenError while the breaker is open, without taking a slot in it.
func (b *breaker) allow() error {
	if until := b.OpenUntil(); !until.IsZero() {
		return &OpenError{Downstream: b.name, RetryAfter: time.Until(until)}
	}
	return nil
}

// run calls fn through the breaker, or returns an *OpenError without calling it.
func (b *breaker) run(fn func() error) error {
	if err := b.allow(); err != nil {
		return err
	}
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		oe := &OpenError{Downstream: b.name}
		if until := b.OpenUntil(); !until.IsZero() {
			oe.RetryAfter = time.Until(until)
		}
		return oe
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return &OpenError{Downstream: b.name}
	}
	return err
}
