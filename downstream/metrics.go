package downstream

import (
	"context"
	"errors"
	"time"
)

// Metrics receives a client's measurements (internal/telemetry implements
// it with Prometheus). Its method must be cheap and safe for concurrent use.
type Metrics interface {
	// ObserveDownstreamAttempt is called after each attempt of a call with
	// the downstream's name ("portfolio" or "execution"), the attempt's
	// outcome (see attemptOutcome) and how long it took.
	ObserveDownstreamAttempt(downstream, outcome string, elapsed time.Duration)
}

// SetMetrics makes the client report its attempts to m. Call it before the
// client is used.
func (p *Portfolio) SetMetrics(m Metrics) { p.c.metrics = m }

// SetMetrics makes the client report its attempts to m. Call it before the
// client is used.
func (e *Execution) SetMetrics(m Metrics) { e.c.metrics = m }

// SetMetrics makes the reader's client report its attempts to m. Call it
// before the reader is used.
func (r *Reader) SetMetrics(m Metrics) { r.p.SetMetrics(m) }

// attemptOutcome classifies the result of one attempt: "ok", "refused"
// (the downstream answered, but no: a business refusal or a client error),
// "error" (timeout, connection error, 5xx, 429, a bad answer),
// "breaker_open" and "bulkhead_full" (not sent), "cancelled" (the caller
// gave up).
func attemptOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrBreakerOpen):
		return "breaker_open"
	case errors.Is(err, ErrBulkheadFull):
		return "bulkhead_full"
	case errors.Is(err, errCallerDone), errors.Is(err, context.Canceled):
		return "cancelled"
	case IsTransient(err):
		return "error"
	}
	return "refused"
}

// observe reports an attempt.
func (c *client) observe(err error, elapsed time.Duration) {
	if c.metrics != nil {
		c.metrics.ObserveDownstreamAttempt(c.name, attemptOutcome(err), elapsed)
	}
}
