// Package server is asyncgate's public HTTP API: routing, authentication,
// request decoding, problem responses and the order handlers. It talks to
// the domain through the small interfaces below and knows nothing of Asynq.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/orders"
)

// OrderStore is what the API needs of the order store.
type OrderStore interface {
	// CreateBound stores the order and, with b.Key set, binds the
	// request's idempotency key to it in the same write (orders.Binding).
	CreateBound(ctx context.Context, o *orders.Order, b orders.Binding) (*orders.Order, bool, error)
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

// URLChecker checks a webhook target URL: it returns an error wrapping
// webhooks.ErrInvalidURL or webhooks.ErrURLNotAllowed for one that is
// refused, another error when it could not tell (DNS unavailable).
type URLChecker interface {
	CheckURL(ctx context.Context, raw string) error
}

// Durability makes a request's writes durable before the API acknowledges
// them (internal/durability.Barrier).
type Durability interface {
	// Sync returns once every write whose reply the caller holds is on
	// disk or on replicas as promised. An error means they were made but
	// are not known to be durable: the API answers 503.
	Sync(ctx context.Context) error
}

// Pinger reports whether a dependency is reachable (readiness).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config configures the API.
type Config struct {
	// APIKeys maps an API key to its tenant: keys fixed by configuration,
	// besides those of Deps.Keys. One of the two is required.
	APIKeys map[string]string
	// AdminKeys maps an admin API key to its tenant. Admin keys also reach
	// the /admin routes.
	AdminKeys map[string]string
	// KeyCacheTTL is how long a Deps.Keys lookup (found or not) is cached
	// in-process: a revoked key works until then. Defaults to 30s.
	KeyCacheTTL time.Duration
	// RateLimit is the limit of every API key (it needs Deps.RedisClient).
	// The zero RateLimit sets none.
	RateLimit RateLimit
	// TenantRateLimits overrides RateLimit for the keys of some tenants (a
	// zero RateLimit: no limit for them).
	TenantRateLimits map[string]RateLimit
	// IdempotencyTTL is how long the answer to a POST with an
	// Idempotency-Key is kept for replays. Defaults to 24h.
	IdempotencyTTL time.Duration
	// IdempotencyClaimTTL is how long an Idempotency-Key stays claimed by a
	// request in flight whose process died. Defaults to 30s.
	IdempotencyClaimTTL time.Duration
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

	// TracerProvider makes the requests' server spans. Defaults to the
	// global provider as it is when New runs (a no-op unless tracing was
	// set up before).
	TracerProvider trace.TracerProvider
	// Metrics receives request and order measurements. Defaults to none.
	Metrics Metrics
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
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.KeyCacheTTL == 0 {
		c.KeyCacheTTL = 30 * time.Second
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.IdempotencyClaimTTL == 0 {
		c.IdempotencyClaimTTL = 30 * time.Second
	}
	c.RateLimit = c.RateLimit.withDefaults()
	limits := make(map[string]RateLimit, len(c.TenantRateLimits))
	for t, l := range c.TenantRateLimits {
		limits[t] = l.withDefaults()
	}
	c.TenantRateLimits = limits
	return c
}

func (c Config) validate() error {
	for k, t := range c.APIKeys {
		if len(k) < 16 {
			return errors.New("server: API keys must be at least 16 characters")
		}
		if !tenantRe.MatchString(t) {
			return fmt.Errorf("server: tenant %q must be 1-64 of [a-z0-9_-]", t)
		}
	}
	return c.validateContract()
}

// Deps are the collaborators of the API.
type Deps struct {
	Orders OrderStore
	Queue  Enqueuer
	Redis  Pinger
	// Keys holds the issued API keys; nil: only Config's keys work.
	Keys KeyStore
	// RedisClient keeps rate limits and idempotency records; nil turns
	// both off.
	RedisClient redis.UniversalClient
	// Portfolio reads accounts' funds; nil: GET /v1/portfolios answers 503.
	Portfolio PortfolioReader
	// Breakers adds the downstream breakers to readiness; nil leaves them out.
	Breakers BreakerReporter
	// Webhooks keeps webhook endpoints and deliveries, WebhookQueue
	// redelivers; nil Webhooks leaves the webhook routes out.
	Webhooks     WebhookStore
	WebhookQueue WebhookQueue
	// EndpointTester sends test events (POST
	// /v1/webhook-endpoints/{id}/test); nil leaves the route out.
	EndpointTester EndpointTester
	// Events is the tenant's event feed (GET /v1/events); nil leaves the
	// route out.
	Events EventFeed
	// CallbackURLs checks an order's callback_url at placement, as the
	// webhook store checks endpoint URLs (webhooks.Store is one); nil
	// leaves only orders.Request.Validate's check of its form.
	CallbackURLs URLChecker
	// Dashboard is the operators' dashboard (package admin) at /admin;
	// nil leaves it out.
	Dashboard Dashboard
	// MetricsHandler serves GET /metrics; nil leaves the route out.
	MetricsHandler http.Handler
	// Durability is passed before every acknowledged write (see
	// durable.go); nil waits for nothing.
	Durability Durability
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	keys map[[32]byte]*principal // sha256(key) → the configured key
	log  *slog.Logger
	h    *gin.Engine

	keyCache     *keyCache
	defaultLimit redis_rate.Limit
	limits       map[string]redis_rate.Limit // by tenant
	redisKeys    redisKeys
	batcher      *batcher
	recorder     *recorder
	releaser     *releaser
}

// New returns the API server.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger}
	if err := s.initContract(); err != nil {
		return nil, err
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.RedirectTrailingSlash = false // "/v1/orders/" is a 404 problem, not an HTML redirect
	r.ContextWithFallback = true
	r.Use(s.tracing()...) // first: the request log and the handlers see the span
	r.Use(s.observe, s.requestLog, s.recoverer)
	r.NoRoute(func(c *gin.Context) {
		writeProblem(c, problemf("not_found", "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		writeProblem(c, problemf("method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.GET("/openapi.yaml", s.openAPI)
	s.metricsRoute(r)

	r.GET("/docs", s.docs)

	v1 := r.Group("/v1", s.authenticate, s.rateLimit, s.idempotency)
	v1.POST("/orders", s.placeOrder)
	v1.GET("/orders", s.listOrders)
	v1.GET("/orders/:id", s.getOrder)
	v1.GET("/orders/:id/events", s.orderEvents)
	v1.POST("/orders/:id/cancel", s.cancelOrder)
	v1.GET("/portfolios/:account_id", s.getPortfolio)

	if deps.Webhooks != nil {
		s.webhookRoutes(v1)
	}
	if deps.Events != nil {
		v1.GET("/events", s.listEvents)
	}

	if deps.Dashboard != nil {
		deps.Dashboard.Routes(r, s)
	}
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
	body := gin.H{"status": status, "checks": checks}
	if s.deps.Breakers != nil {
		body["breakers"] = s.deps.Breakers.Breakers(ctx)
	}
	writeJSON(c, code, "application/json", body)
}
