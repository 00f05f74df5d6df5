package webhooks

import "time"

// Metrics receives the deliverer's measurements (internal/telemetry
// implements it with Prometheus). Its method must be cheap and safe for
// concurrent use.
type Metrics interface {
	// ObserveWebhookAttempt is called after each delivery attempt that was
	// made and recorded, with its outcome — "delivered" (2xx), "retry"
	// (failed, another attempt is scheduled), "failed" (the last attempt of
	// the budget failed), "gone" (410: the endpoint is disabled) — and its
	// latency. Postponements (open breaker, not due) are no attempts.
	ObserveWebhookAttempt(outcome string, elapsed time.Duration)
}

type noMetrics struct{}

func (noMetrics) ObserveWebhookAttempt(string, time.Duration) {}

// attemptLatency is an attempt's latency as the attempt log holds it.
func attemptLatency(a Attempt) time.Duration {
	return time.Duration(a.LatencyMS * float64(time.Millisecond))
}
