// Package server is asyncgate's public HTTP API: routing, authentication,
// request decoding, problem responses and the order handlers. It talks to
// the domain through the small interfaces below and knows nothing of Asynq.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/asyncgate/asyncgate/orders"
)

// OrderStore is what the API needs of the order store.
type OrderStore interface {
	Create(ctx context.Context, o *orders.Order) (*orders.Order, error)
	Get(ctx context.Context, tenant, id string) (*orders.Order, error)
	Events(ctx context.Context, tenant, id string) ([]orders.Event, error)
	List(ctx context.Context, tenant string, p orders.ListParams) ([]*orders.Order, string, error)
	RequestCancel(ctx context.Context, tenant, id string) error
	// WaitForChange returns once the order's status differs from known, or ctx ends.
	WaitForChange(ctx context.Context, tenant, id string, known orders.Status) (*orders.Order, error)
}

// Enqueuer puts order work on the queues.
type Enqueuer interface {
	EnqueueOrder(ctx context.Context, tenant, id string, headers map[string]string) error
	EnqueueCompensation(ctx context.Context, tenant, id string, headers map[string]string) error
}

// Pinger reports whether a dependency is reachable (readiness).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config configures the API.
type Config struct {
	// APIKeys maps an API key to its tenant. Required.
	APIKeys map[string]string
	// MaxBodyBytes caps request bodies. Defaults to 64 KiB.
	MaxBodyBytes int64
	// OrderDeadline is how long an order may take to end. Defaults to 15m.
	OrderDeadline time.Duration
	// RetryAfter is the polling hint sent with 202. Defaults to 1s.
	RetryAfter time.Duration
	// MaxWait caps the ?wait= long-poll. Defaults to 60s.
	MaxWait time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.OrderDeadline == 0 {
		c.OrderDeadline = 15 * time.Minute
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if len(c.APIKeys) == 0 {
		return errors.New("server: no API keys configured; every endpoint needs one")
	}
	for k, t := range c.APIKeys {
		if len(k) < 16 {
			return errors.New("server: API keys must be at least 16 characters")
		}
		if !tenantRe.MatchString(t) {
			return fmt.Errorf("server: tenant %q must be 1-64 of [a-z0-9_-]", t)
		}
	}
	return nil
}

// Deps are the collaborators of the API.
type Deps struct {
	Orders OrderStore
	Queue  Enqueuer
	Redis  Pinger
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	keys map[[32]byte]string // sha256(key) → tenant
	log  *slog.Logger
	h    *gin.Engine
}

// New returns the API server.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, keys: make(map[[32]byte]string), log: cfg.Logger}
	for k, t := range cfg.APIKeys {
		s.keys[sha256.Sum256([]byte(k))] = t
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.requestLog, s.recoverer)
	r.NoRoute(func(c *gin.Context) { writeProblem(c, problemf("not_found", "no route %s %s", c.Request.Method, c.Request.URL.Path)) })
	r.NoMethod(func(c *gin.Context) {
		writeProblem(c, problemf("method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)

	v1 := r.Group("/v1", s.authenticate)
	v1.POST("/orders", s.placeOrder)
	v1.GET("/orders", s.listOrders)
	v1.GET("/orders/:id", s.getOrder)
	v1.GET("/orders/:id/events", s.orderEvents)
	v1.POST("/orders/:id/cancel", s.cancelOrder)
	s.h = r
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

const (
	ctxRequestID = "request_id"
	ctxTenant    = "tenant"
)

func (s *Server) requestLog(c *gin.Context) {
	start := time.Now()
	rid := c.GetHeader("X-Request-Id")
	if rid == "" || len(rid) > 128 {
		rid = uuid.NewString()
	}
	c.Set(ctxRequestID, rid)
	c.Header("X-Request-Id", rid)
	c.Next()
	status := c.Writer.Status()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	if !s.log.Enabled(c, level) {
		return
	}
	attrs := []any{"request_id", rid, "method", c.Request.Method, "route", c.FullPath(), "status", status,
		"latency_ms", float64(time.Since(start).Microseconds()) / 1000, "tenant", c.GetString(ctxTenant)}
	if len(c.Errors) > 0 {
		attrs = append(attrs, "err", c.Errors.Last().Err.Error())
	}
	s.log.Log(c, level, "request", attrs...)
}

func (s *Server) recoverer(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.ErrorContext(c, "panic in handler", "panic", fmt.Sprint(r), "request_id", c.GetString(ctxRequestID))
			writeProblem(c, fmt.Errorf("panic: %v", r))
		}
	}()
	c.Next()
}

func (s *Server) healthz(c *gin.Context) {
	writeJSON(c, http.StatusOK, "application/json", gin.H{"status": "ok"})
}

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"redis": "ok"}
	status, code := "ok", http.StatusOK
	if err := s.deps.Redis.Ping(ctx); err != nil {
		checks["redis"] = "unreachable"
		status, code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(c, code, "application/json", gin.H{"status": status, "checks": checks})
}
