package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/jobs"
)

// options are the flags of the service commands (dev, serve, api, worker).
type options struct {
	redisURL      string
	redisSentinel string // --redis-sentinel: a Sentinel-managed master instead of --redis
	// failover are the options of the --redis-sentinel client (set by
	// newRedis), for the worker's own clients (decision 84).
	failover      *redis.FailoverOptions
	redisCluster  string // --redis-cluster: a Redis Cluster instead of --redis
	redisWait     time.Duration
	queueShards   int // --queue-shards
	addr          string
	apiKeys       string
	adminKeys     string
	rateLimit     string
	tenantLimits  string
	keyCacheTTL   time.Duration
	admin         adminOptions
	portfolioURL  string
	executionURL  string
	orderDeadline time.Duration
	concurrency   int
	hookConc      int // --webhook-concurrency
	endpointConc  int // --webhook-endpoint-concurrency
	listen        listenOptions
	logFormat     string
	logLevel      string
	metricsAddr   string
	pprofAddr     string // --pprof-addr
	traceStdout   bool
	downTimeout   time.Duration
	reconcile     time.Duration
	resumeAfter   time.Duration
	resilience    resilienceOptions
	durability    durabilityOptions
	webhooks      webhookOptions
	envErr        error // bad ASYNCGATE_* values, reported with the other config errors
}

// role says what a service command runs: dev and serve both, api and worker one.
type role struct{ dev, api, worker bool }

func roleOf(cmd string) role {
	switch cmd {
	case "dev":
		return role{dev: true, api: true, worker: true}
	case "serve":
		return role{api: true, worker: true}
	case "api":
		return role{api: true}
	}
	return role{worker: true}
}

// newFlags registers the flags of a service command: only those its role
// reads, under the headings of its help. Defaults come from ASYNCGATE_*
// variables. See cmdFlags for how to add one.
func newFlags(cmd string, getenv func(string) string, o *options) *cmdFlags {
	r := roleOf(cmd)
	cf := newCmdFlags(cmd, getenv)

	g := cf.Group("Redis")
	if r.dev {
		g.String(&o.redisURL, "redis", "URL", "", "Redis URL such as redis://localhost:6379/0; empty runs an in-memory Redis")
	} else {
		g.String(&o.redisURL, "redis", "URL", "", "Redis URL such as redis://localhost:6379/0 (this, --redis-sentinel or --redis-cluster is required)")
		g.String(&o.redisSentinel, "redis-sentinel", "URL", "", "instead of --redis: the master that Redis Sentinel names, followed through failovers, as redis://[SENTINEL_USER:SENTINEL_PASSWORD@]SENTINEL:26379/DB?master_name=NAME&addr=SENTINEL2:26379&password=MASTER_PASSWORD")
		g.String(&o.redisCluster, "redis-cluster", "URL", "", "instead of --redis: a Redis Cluster, as redis://[USER:PASSWORD@]NODE:6379?addr=NODE2:6379&addr=NODE3:6379 (any nodes; the others are discovered)")
	}
	g.Duration(&o.redisWait, "redis-wait", 5*time.Second, "how long to wait for Redis to answer at start before giving up")
	o.queueShards = jobs.DefaultQueueShards
	g.Func("queue-shards", "N", strconv.Itoa(jobs.DefaultQueueShards), fmt.Sprintf("shards of each task queue (1 to %d): a task goes to its order's shard, and on a Redis Cluster the shards spread over the masters; workers also drain the shards of any other count still holding tasks", jobs.MaxQueueShards), func(s string) error {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want a whole number from 1 to %d, such as %d, not %q", jobs.MaxQueueShards, jobs.DefaultQueueShards, s)
		}
		if err := jobs.ValidateQueueShards(n); err != nil {
			return fmt.Errorf("want a whole number from 1 to %d, not %d", jobs.MaxQueueShards, n)
		}
		o.queueShards = n
		return nil
	})
	o.durability.register(cf, r)

	if r.api {
		g := cf.Group("HTTP API")
		addrDef := ":8080"
		if r.dev {
			addrDef = "127.0.0.1:8080"
		}
		g.String(&o.addr, "addr", "ADDR", addrDef, "API listen address")
		g.String(&o.rateLimit, "rate-limit", "RATE/PERIOD[:BURST]", "100/s", "requests per API key, such as 100/s, 6000/m:200 or 10/500ms; off: no limit")
		g.String(&o.tenantLimits, "tenant-rate-limits", "TENANT=LIMIT,...", "", "per-tenant rate limits, such as acme=1000/s,beta=10/s:20")
		// The API stamps each order's deadline when it accepts it; workers read it from the order.
		g.Duration(&o.orderDeadline, "order-deadline", 15*time.Minute, "how long an accepted order may take before it fails")

		g = cf.Group("API keys")
		g.String(&o.apiKeys, "api-keys", "KEY=TENANT,...", "", "API keys as key=tenant pairs, besides those of 'asyncgate keys create'")
		g.String(&o.adminKeys, "admin-keys", "KEY=TENANT,...", "", "admin keys (they reach /admin) as key=tenant pairs")
		g.Duration(&o.keyCacheTTL, "key-cache-ttl", 30*time.Second, "how long API key lookups are cached: a revoked key works until then")

		g = cf.Group("Dashboard")
		g.String(&o.admin.sessionSecret, "admin-session-secret", "SECRET", "", "secret (32+ bytes) signing the dashboard's session cookies; empty: a random one kept in Redis, shared by every API process")
		g.Duration(&o.admin.sessionTTL, "admin-session-ttl", 8*time.Hour, "how long a dashboard login lasts")
		g.Bool(&o.admin.queuesReadOnly, "admin-queues-readonly", false, "make the queue dashboard (/admin/queues) read-only")
	}

	if r.worker {
		g := cf.Group("Workers")
		g.Int(&o.concurrency, "concurrency", 50, 1, "N", "order tasks run at once per worker")
		g.Int(&o.hookConc, "webhook-concurrency", 50, 1, "N", "webhook tasks (fan-outs, deliveries) run at once per worker, in slots of their own: a slow receiver never takes an order's")
		g.Int(&o.endpointConc, "webhook-endpoint-concurrency", 4, 1, "N", "deliveries in flight to one webhook endpoint (or one tenant's callback URLs) across all workers; the rest wait in Redis")
		g.Duration(&o.reconcile, "reconcile-interval", 15*time.Second, "how often lost orders are looked for")
		g.Duration(&o.resumeAfter, "resume-after", 30*time.Second, "bound on how long an order held by a worker that died waits for another worker (its lease is 2/3 of it and must outlast a downstream call's 5s budget: at least 8s)")
	}

	g = cf.Group("Downstream services")
	switch {
	case r.dev:
		g.String(&o.portfolioURL, "portfolio-url", "URL", "", "base URL of the portfolio service; empty: the built-in simulator")
		g.String(&o.executionURL, "execution-url", "URL", "", "base URL of the execution service; empty: the built-in simulator")
	case r.worker:
		g.String(&o.portfolioURL, "portfolio-url", "URL", "", "base URL of the portfolio service (required)")
		g.String(&o.executionURL, "execution-url", "URL", "", "base URL of the execution service (required)")
	default:
		g.String(&o.portfolioURL, "portfolio-url", "URL", "", "base URL of the portfolio service, read by GET /v1/portfolios; empty: that route answers 503")
	}
	if r.worker {
		g.Duration(&o.downTimeout, "downstream-timeout", 2*time.Second, "timeout of one downstream HTTP call")
	}
	o.resilience.register(cf, r)

	o.webhooks.register(cf, r)
	o.listen.register(cf)

	g = cf.Group("Logs, metrics and traces")
	logDef := "json"
	if r.dev {
		logDef = "text"
	}
	g.String(&o.logFormat, "log-format", "json|text", logDef, "log format")
	g.String(&o.logLevel, "log-level", "LEVEL", "info", "log level: debug, info, warn or error")
	// No default port: several workers may share a host (and the tests start
	// many); a worker's metrics need --metrics-addr such as :9091.
	g.String(&o.metricsAddr, "metrics-addr", "ADDR", "", "listen address serving only GET /metrics and /healthz, such as :9091 (what a worker needs to be scraped); empty: none, the API serves /metrics on --addr")
	g.String(&o.pprofAddr, "pprof-addr", "ADDR", "", "listen address serving only Go's profiles (/debug/pprof/), such as 127.0.0.1:6060; keep it off public networks; empty: none")
	g.Bool(&o.traceStdout, "trace-stdout", false, "write OpenTelemetry spans to stdout as JSON; without it, spans go by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else nowhere")
	o.envErr = cf.envErr
	return cf
}

func (o *options) logger(out io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	hopts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: human.ReplaceAttr}
	// telemetry.NewLogHandler stamps each line logged with a context on a
	// span with its trace_id and span_id.
	switch o.logFormat {
	case "json":
		return slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(out, hopts))), nil
	case "text":
		return slog.New(telemetry.NewLogHandler(slog.NewTextHandler(out, hopts))), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", o.logFormat)
}

// tracing sets up OpenTelemetry tracing as --trace-stdout and the standard
// OTEL_* environment ask (off by default). The returned func flushes the
// spans still buffered; call it on the way out.
func (o *options) tracing(ctx context.Context, stdout io.Writer, getenv func(string) string, log *slog.Logger) (func(), error) {
	cfg := telemetry.TracingConfig{Getenv: getenv, Logger: log}
	if o.traceStdout {
		cfg.Stdout = stdout
	}
	shutdown, err := telemetry.SetupTracing(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("flushing spans failed", "err", err)
		}
	}, nil
}

// parseKeys parses "key=tenant,key2=tenant2".
func parseKeys(s string) (map[string]string, error) {
	keys := make(map[string]string)
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, t, ok := strings.Cut(pair, "=")
		if !ok || k == "" || t == "" {
			return nil, errors.New("--api-keys wants key=tenant pairs separated by commas")
		}
		keys[k] = t
	}
	return keys, nil
}

func checkURL(flagName, v string) error {
	if v == "" {
		return fmt.Errorf("--%s is required", flagName)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--%s must be an http(s) URL, not %q", flagName, v)
	}
	return nil
}

// appConfig turns options into an app.Config, checking what the roles need.
func (o *options) appConfig(api, worker bool, log *slog.Logger) (app.Config, error) {
	cfg := app.Config{API: api, Worker: worker, Addr: o.addr, Logger: log, MetricsAddr: o.metricsAddr, PprofAddr: o.pprofAddr, Listen: o.listen.config(),
		QueueShards: o.queueShards}
	var errs []error
	if o.envErr != nil {
		errs = append(errs, o.envErr)
	}
	if api {
		keys, err := parseKeys(o.apiKeys)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Server.APIKeys = keys
		if err := o.contractConfig(&cfg.Server); err != nil {
			errs = append(errs, err)
		}
		cfg.Server.OrderDeadline = o.orderDeadline
		if err := o.admin.apply(&cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if worker {
		if err := checkURL("portfolio-url", o.portfolioURL); err != nil {
			errs = append(errs, err)
		}
		if err := checkURL("execution-url", o.executionURL); err != nil {
			errs = append(errs, err)
		}
		cfg.Portfolio.BaseURL, cfg.Execution.BaseURL = o.portfolioURL, o.executionURL
		cfg.Portfolio.Timeout, cfg.Execution.Timeout = o.downTimeout, o.downTimeout
		if o.concurrency < 1 {
			errs = append(errs, errors.New("--concurrency must be at least 1"))
		}
		cfg.WorkerPool.Concurrency = o.concurrency
		cfg.WorkerPool.WebhookConcurrency = o.hookConc
		cfg.WorkerPool.ShutdownTimeout = taskShutdownTimeout
		cfg.Reconciler.Interval = o.reconcile
		if o.resumeAfter < 8*time.Second {
			errs = append(errs, errors.New("--resume-after must be at least 8s: the order lease (2/3 of it) must outlast a downstream call's 5s budget"))
		}
		cfg.ResumeAfter = o.resumeAfter
	}
	if err := o.resilienceConfig(&cfg, api, worker); err != nil {
		errs = append(errs, err)
	}
	var err error
	if cfg.Webhooks, err = o.webhooks.config(); err != nil {
		errs = append(errs, err)
	}
	cfg.Webhooks.Deliverer.EndpointConcurrency = o.endpointConc
	return cfg, errors.Join(errs...)
}

// checkRedis says whether exactly one Redis is given: --redis, --redis-sentinel
// or --redis-cluster.
func (o *options) checkRedis() error {
	var given []string
	for _, f := range []struct{ flag, env, val string }{
		{"--redis", "ASYNCGATE_REDIS", o.redisURL},
		{"--redis-sentinel", "ASYNCGATE_REDIS_SENTINEL", o.redisSentinel},
		{"--redis-cluster", "ASYNCGATE_REDIS_CLUSTER", o.redisCluster},
	} {
		if f.val != "" {
			given = append(given, f.flag+" ("+f.env+")")
		}
	}
	const all = "--redis (ASYNCGATE_REDIS), --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) or --redis-cluster (ASYNCGATE_REDIS_CLUSTER)"
	switch len(given) {
	case 0:
		return errors.New("one Redis is required: " + all + ", such as --redis redis://localhost:6379/0")
	case 1:
		return nil
	}
	return fmt.Errorf("give exactly one of %s, not %s", all, strings.Join(given, " and "))
}

// newRedis returns the client of the Redis that checkRedis accepted, and its URL.
func (o *options) newRedis() (redis.UniversalClient, string, error) {
	if o.redisSentinel != "" {
		opt, err := app.SentinelOptions(o.redisSentinel)
		if err != nil {
			return nil, o.redisSentinel, err
		}
		o.failover = opt
		// A copy: the client writes to its options once in use, and the
		// worker copies these for clients of its own (decision 84).
		c := *opt
		return redis.NewFailoverClient(&c), o.redisSentinel, nil
	}
	if o.redisCluster != "" {
		rdb, err := app.NewClusterRedis(o.redisCluster)
		return rdb, o.redisCluster, err
	}
	rdb, err := app.NewRedis(o.redisURL)
	return rdb, o.redisURL, err
}
