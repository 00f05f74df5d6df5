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
