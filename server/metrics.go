package server

import (
	"time"

	"github.com/gin-gonic/gin"
)

// Metrics receives the API's measurements (internal/telemetry implements
// it with Prometheus). Its methods must be cheap and safe for concurrent use.
type Metrics interface {
	// ObserveHTTPRequest is called once per answered request with the
	// matched route template, such as "/v1/orders/:id" ("" when no route
	// matched: the implementation must not use the raw path as a label).
	ObserveHTTPRequest(route, method string, status int, elapsed time.Duration)
	// OrderAccepted is called for each order stored and answered 202.
	OrderAccepted()
}

type noMetrics struct{}

func (noMetrics) ObserveHTTPRequest(string, string, int, time.Duration) {}
func (noMetrics) OrderAccepted()                                        {}

// observe is the middleware that reports every request to Config.Metrics.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.cfg.Metrics.ObserveHTTPRequest(c.FullPath(), c.Request.Method, c.Writer.Status(), time.Since(start))
}

// metricsRoute serves GET /metrics from Deps.MetricsHandler, without
// authentication like the other operational routes; nil leaves it out.
func (s *Server) metricsRoute(r *gin.Engine) {
	if s.deps.MetricsHandler != nil {
		r.GET("/metrics", gin.WrapH(s.deps.MetricsHandler))
	}
}
