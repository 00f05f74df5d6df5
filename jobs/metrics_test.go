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

func TestStepOutcome(t *testing.T) {
	rejected := &orders.Order{Status: orders.Rejected}
	for _, tt := range []struct {
		err   error
		ended *orders.Order
		want  string
	}{
		{nil, &orders.Order{Status: orders.Validated}, "ok"},
		{nil, nil, "ok"},
		{nil, rejected, "rejected"},
		{errCompensate, nil, "compensate"},
		{fmt.Errorf("x: %w", orders.ErrCompensate), nil, "compensate"},
		{orders.ErrFenced, nil, "fenced"},
		{&Postponed{Delay: time.Second, Err: orders.ErrLeaseHeld}, nil, "postponed"},
		{fmt.Errorf("reserve funds: %w", &downstream.OpenError{Downstream: "portfolio", RetryAfter: time.Second}), nil, "postponed"},
		{fmt.Errorf("reserve funds: %w", &downstream.StatusError{Downstream: "portfolio", Code: 400}), nil, "failed"},
		{fmt.Errorf("decode: %w", asynq.SkipRetry), nil, "failed"},
		{fmt.Errorf("reserve funds: %w", &downstream.StatusError{Downstream: "portfolio", Code: 503}), nil, "retry"},
		{errors.New("redis: connection refused"), nil, "retry"},
	} {
		if got := stepOutcome(tt.err, tt.ended); got != tt.want {
			t.Errorf("stepOutcome(%v, %v) = %q, want %q", tt.err, tt.ended, got, tt.want)
		}
	}
}
