package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/orders"
)

// Metrics receives the saga's measurements (internal/telemetry implements
// it with Prometheus). Its methods must be cheap and safe for concurrent use.
type Metrics interface {
	// ObserveSagaStep is called after each run of a step: "validate",
	// "reserve", "execute" (the steps of ProcessTask), "compensate" and
	// "release" (the tasks), with its outcome (see stepOutcome) and how long
	// it took.
	ObserveSagaStep(step, outcome string, elapsed time.Duration)
	// OrderEnded is called when the saga moved an order to a terminal status.
	OrderEnded(status orders.Status)
}

type noMetrics struct{}

func (noMetrics) ObserveSagaStep(string, string, time.Duration) {}
func (noMetrics) OrderEnded(orders.Status)                      {}

// metricStep names the step that leaves status st, as a metric label.
func metricStep(st orders.Status) string {
	switch st {
	case orders.Pending:
		return "validate"
	case orders.Validated:
		return "reserve"
	case orders.FundsReserved:
		return "execute"
	}
	return "other"
}

// stepOutcome classifies the result of a saga step or task: "ok",
// "rejected" (the order ended rejected: risk limit, insufficient funds),
// "compensate" (a rollback was requested: execution refused, cancel),
// "postponed" (open breaker, full bulkhead, held lease), "fenced" (another
// worker took the order over), "failed" (permanent: retrying cannot help)
// or "retry" (anything else: the task runs again).
func stepOutcome(err error, ended *orders.Order) string {
	switch {
	case err == nil && ended != nil && ended.Status == orders.Rejected:
		return "rejected"
	case err == nil:
		return "ok"
	case errors.Is(err, errCompensate), errors.Is(err, orders.ErrCompensate):
		return "compensate"
	case errors.Is(err, orders.ErrFenced):
		return "fenced"
	}
	if _, ok := errors.AsType[*Postponed](err); ok {
		return "postponed"
	}
	if _, ok := downstream.Postpone(err); ok {
		return "postponed"
	}
	if permanent(err) || errors.Is(err, asynq.SkipRetry) {
		return "failed"
	}
	return "retry"
}

// observeStep reports a step of ProcessTask that started at start from
// status from.
func (s *Saga) observeStep(from orders.Status, o *orders.Order, err error, start time.Time) {
	s.metrics.ObserveSagaStep(metricStep(from), stepOutcome(err, o), time.Since(start))
}

// measured wraps a task handler whose runs count as the saga step step.
func (s *Saga) measured(step string, h asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		start := time.Now()
		err := h(ctx, t)
		s.metrics.ObserveSagaStep(step, stepOutcome(err, nil), time.Since(start))
		return err
	}
}
