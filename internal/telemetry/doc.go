// Package telemetry sets up asyncgate's observability: OpenTelemetry
// tracing (tracing.go), Prometheus metrics (metrics.go) and the structured
// log handler that stamps trace and span ids on every line (log.go).
package telemetry
