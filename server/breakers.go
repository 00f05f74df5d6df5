package server

import (
	"context"
	"time"
)

// BreakerReporter tells the state of the downstream circuit breakers, for the detail of
// readiness. An open breaker does not make the API unready: orders are still accepted and
// wait for the downstream.
type BreakerReporter interface {
	// Breakers returns each downstream's breaker state, by downstream name.
	Breakers(ctx context.Context) map[string]BreakerState
}

// BreakerState is one downstream's breaker as readiness shows it.
type BreakerState struct {
	// State is "closed", "open" or "half-open".
	State string `json:"state"`
	// OpenUntil is when an open breaker lets a probe through.
	OpenUntil *time.Time `json:"open_until,omitempty"`
}
