package jobs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/orders"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	s := NewSaga(nil, nil, nil, nil, SagaConfig{RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second})
	task := asynq.NewTask(TypeProcessOrder, nil)
	for n := range 12 {
		want := min(100*time.Millisecond<<n, 2*time.Second)
		for range 50 {
			d := s.RetryDelay(n, errors.New("boom"), task)
			if d < want/2 || d > want {
				t.Fatalf("retry %d: delay %s outside [%s, %s]", n, d, want/2, want)
			}
		}
	}
	p := &Postponed{Delay: 1234 * time.Millisecond, Err: errors.New("breaker open")}
	if d := s.RetryDelay(3, fmt.Errorf("wrapped: %w", p), task); d != p.Delay {
		t.Fatalf("postponed delay = %s, want %s", d, p.Delay)
	}
}

func TestIsFailure(t *testing.T) {
	t.Parallel()
	if IsFailure(&Postponed{Delay: time.Second, Err: errors.New("x")}) {
		t.Error("a postponement must not count as a failure")
	}
	if !IsFailure(errors.New("x")) {
		t.Error("an error must count as a failure")
	}
	if IsFailure(nil) {
		t.Error("nil is no failure")
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&downstream.StatusError{Code: 400}, true},
		{&downstream.StatusError{Code: 404}, true},
		{&downstream.StatusError{Code: 429}, false},
		{&downstream.StatusError{Code: 503}, false},
		{fmt.Errorf("x: %w", orders.ErrInvalidTransition), true},
		{errors.New("dial tcp: connection refused"), false},
	} {
		if got := permanent(tt.err); got != tt.want {
			t.Errorf("permanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRetryablePostponesRefusedCalls(t *testing.T) {
	t.Parallel()
	// Asynq keeps retry times in whole seconds, truncated: the wait is rounded up to end
	// on one, so that the task does not come back before the breaker lets a probe through.
	now := time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
	s := NewSaga(nil, nil, nil, nil, SagaConfig{Now: func() time.Time { return now }})
	for _, tt := range []struct {
		err  error
		want time.Duration // 0: not postponed
	}{
		{fmt.Errorf("release: %w", &downstream.OpenError{Downstream: "portfolio", RetryAfter: 3 * time.Second}), 3500 * time.Millisecond},
		{fmt.Errorf("release: %w", &downstream.BulkheadError{Downstream: "portfolio", RetryAfter: 700 * time.Millisecond}), 1500 * time.Millisecond},
		{&downstream.OpenError{Downstream: "portfolio", RetryAfter: 500 * time.Millisecond}, 500 * time.Millisecond},
		{&downstream.StatusError{Downstream: "portfolio", Code: 503, RetryAfter: time.Second}, 0},
	} {
		err := s.retryable(tt.err)
		p, ok := errors.AsType[*Postponed](err)
		switch {
		case tt.want == 0 && ok:
			t.Errorf("%v postponed", tt.err)
		case tt.want != 0 && (!ok || p.Delay != tt.want || IsFailure(err)):
			t.Errorf("%v: %v, want postponed by %s", tt.err, err, tt.want)
		}
	}
}
