package downstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestAttemptOutcome(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("reserve: %w", ErrInsufficientFunds), "refused"},
		{ErrRefused, "refused"},
		{&StatusError{Downstream: "portfolio", Code: 400}, "refused"},
		{&StatusError{Downstream: "portfolio", Code: 503}, "error"},
		{&StatusError{Downstream: "portfolio", Code: 429}, "error"},
		{&connError{errors.New("connection refused")}, "error"},
		{fmt.Errorf("%w: garbage", ErrBadResponse), "error"},
		{context.DeadlineExceeded, "error"},
		{&OpenError{Downstream: "execution", RetryAfter: time.Second}, "breaker_open"},
		{&BulkheadError{Downstream: "execution", RetryAfter: time.Second}, "bulkhead_full"},
		{fmt.Errorf("%w: %w", errCallerDone, context.Canceled), "cancelled"},
		{context.Canceled, "cancelled"},
	} {
		if got := attemptOutcome(tt.err); got != tt.want {
			t.Errorf("attemptOutcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
