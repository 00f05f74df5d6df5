package jobs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/webhooks"
)

func TestNotifierRetryDelay(t *testing.T) {
	t.Parallel()
	n := NewNotifier(nil, nil, nil, nil, nil, NotifierConfig{RetryBase: 100 * time.Millisecond, RetryMax: time.Second})
	task := asynq.NewTask(TypeWebhookDeliver, nil)
	for _, err := range []error{
		&retryIn{Delay: 1234 * time.Millisecond, Err: errors.New("500")},
		fmt.Errorf("wrapped: %w", &Postponed{Delay: 1234 * time.Millisecond, Err: errors.New("breaker open")}),
	} {
		before := time.Now()
		d := n.RetryDelay(3, err, task)
		at := before.Add(d)
		// The wait the attempt asked for, stretched to a whole second:
		// Asynq truncates retry times to seconds.
		if d < 1234*time.Millisecond || d > 2234*time.Millisecond+10*time.Millisecond {
			t.Errorf("%v: delay %s, want 1.234s stretched to the next whole second", err, d)
		}
		if ns := at.Nanosecond(); ns > int(10*time.Millisecond) && ns < int(990*time.Millisecond) {
			t.Errorf("%v: the retry is due at %s, not on a whole second", err, at.Format("15:04:05.000"))
		}
	}
	for range 50 {
		if d := n.RetryDelay(2, errors.New("redis away"), task); d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("backoff after 2 retries: %s, want within [200ms, 400ms]", d)
		}
	}
}

func TestToWholeSecond(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 250*int(time.Millisecond), time.UTC)
	for _, tt := range []struct{ d, want time.Duration }{
		{0, 750 * time.Millisecond},
		{10 * time.Millisecond, 750 * time.Millisecond},
		{750 * time.Millisecond, 750 * time.Millisecond},
		{time.Second, 1750 * time.Millisecond},
		{2 * time.Second, 2750 * time.Millisecond},
	} {
		if got := wholeSecond(now, tt.d); got != tt.want {
			t.Errorf("wholeSecond(%s) = %s, want %s", tt.d, got, tt.want)
		}
	}
}

func TestWorkerRetryDelayDispatchesOnTaskType(t *testing.T) {
	t.Parallel()
	w := &Worker{delays: map[string]asynq.RetryDelayFunc{}}
	w.SetRetryDelay(TypeWebhookDeliver, func(int, error, *asynq.Task) time.Duration { return time.Hour })
	f := w.retryDelay(func(int, error, *asynq.Task) time.Duration { return time.Minute })
	if d := f(0, errors.New("x"), asynq.NewTask(TypeWebhookDeliver, nil)); d != time.Hour {
		t.Errorf("webhook task: %s, want its own delay", d)
	}
	if d := f(0, errors.New("x"), asynq.NewTask(TypeProcessOrder, nil)); d != time.Minute {
		t.Errorf("order task: %s, want the default", d)
	}
}

// TestNotifierBusyEndpointBacksOff: a delivery whose endpoint's slots are
// taken comes back soon at first, then less often, never past 8 times the
// first wait (and a whole second).
func TestNotifierBusyEndpointBacksOff(t *testing.T) {
	t.Parallel()
	n := NewNotifier(nil, nil, nil, nil, nil, NotifierConfig{})
	task := asynq.NewTask(TypeWebhookDeliver, nil)
	busy := &Postponed{Delay: time.Second, Err: webhooks.ErrEndpointBusy}
	for range 20 {
		if d := n.RetryDelay(0, busy, task); d > 2*time.Second {
			t.Fatalf("first return: %s, want at most 1s stretched to a whole second", d)
		}
		if d := n.RetryDelay(2, busy, task); d < 2*time.Second || d > 5*time.Second {
			t.Fatalf("third return: %s, want within [2s, 4s] and a whole second", d)
		}
		if d := n.RetryDelay(50, busy, task); d < 4*time.Second || d > 9*time.Second {
			t.Fatalf("50th return: %s, want within [4s, 8s] and a whole second", d)
		}
	}
}
