package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/telemetry"
)

// options are the flags shared by the service commands.
type options struct {
	redisURL      string
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
	logFormat     string
	logLevel      string
	metricsAddr   string
	traceStdout   bool
	downTimeout   time.Duration
	reconcile     time.Duration
	resumeAfter   time.Duration
	resilience    resilienceOptions
	envErr        error // bad ASYNCGATE_* values, reported with the other config errors
}

// newFlags makes a flag set whose defaults come from ASYNCGATE_* variables.
func newFlags(name string, out io.Writer, getenv func(string) string, o *options, dev bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	env := func(flagName, def string) string {
		if v := getenv("ASYNCGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, n, def, usage string) {
		fs.StringVar(p, n, env(n, def), usage+" (env ASYNCGATE_"+strings.ToUpper(strings.ReplaceAll(n, "-", "_"))+")")
	}
	addrDef, logDef, redisUsage := ":8080", "json", "Redis URL, such as redis://localhost:6379/0"
	if dev {
		addrDef, logDef, redisUsage = "127.0.0.1:8080", "text", "Redis URL; empty runs an in-memory Redis"
	}
	str(&o.redisURL, "redis", "", redisUsage)
	str(&o.addr, "addr", addrDef, "API listen address")
	str(&o.apiKeys, "api-keys", "", "API keys as key=tenant pairs, comma-separated, besides those of 'asyncgate keys create'")
	str(&o.adminKeys, "admin-keys", "", "admin API keys as key=tenant pairs, comma-separated")
	str(&o.rateLimit, "rate-limit", "100/s", "requests per API key: RATE/PERIOD[:BURST] such as 100/s or 6000/m:200, or off")
	str(&o.tenantLimits, "tenant-rate-limits", "", "per-tenant rate limits: tenant=RATE/PERIOD[:BURST] pairs, comma-separated")
	str(&o.portfolioURL, "portfolio-url", "", "base URL of the portfolio service")
	str(&o.executionURL, "execution-url", "", "base URL of the execution service")
	str(&o.logFormat, "log-format", logDef, "log format: json or text")
	str(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	// No default port: several workers may share a host (and the tests start
	// many); a worker's metrics need --metrics-addr such as :9091.
	str(&o.metricsAddr, "metrics-addr", "", "listen address serving only GET /metrics and /healthz, such as :9091 (what a worker needs to be scraped); empty: none, the API serves /metrics on --addr")
	dur := func(p *time.Duration, n string, def time.Duration, usage string) {
		fs.Func(n, usage+" (env ASYNCGATE_"+strings.ToUpper(strings.ReplaceAll(n, "-", "_"))+", default "+def.String()+")", func(s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return fmt.Errorf("want a positive duration such as 30s")
			}
			*p = d
			return nil
		})
		*p = def
		if v := env(n, ""); v != "" {
			if err := fs.Set(n, v); err != nil {
				o.envErr = errors.Join(o.envErr, fmt.Errorf("ASYNCGATE_%s: %v", strings.ToUpper(strings.ReplaceAll(n, "-", "_")), err))
			}
		}
	}
	dur(&o.orderDeadline, "order-deadline", 15*time.Minute, "how long an order may take before it fails")
	dur(&o.downTimeout, "downstream-timeout", 2*time.Second, "timeout of one downstream HTTP call")
	dur(&o.reconcile, "reconcile-interval", 15*time.Second, "how often lost orders are looked for")
	dur(&o.resumeAfter, "resume-after", 30*time.Second, "bound on how long an order held by a worker that died waits for another worker (its lease is 2/3 of it and must outlast a downstream call's 5s budget: at least 8s)")
	dur(&o.keyCacheTTL, "key-cache-ttl", 30*time.Second, "how long API key lookups are cached: a revoked key works until then")
	str(&o.admin.sessionSecret, "admin-session-secret", "", "secret (32+ bytes) signing the dashboard's session cookies; empty: a random one kept in Redis, shared by every API process")
	dur(&o.admin.sessionTTL, "admin-session-ttl", 8*time.Hour, "how long a dashboard login lasts")
	fs.BoolVar(&o.admin.queuesReadOnly, "admin-queues-readonly", false, "make the queue dashboard (/admin/queues) read-only (env ASYNCGATE_ADMIN_QUEUES_READONLY)")
	if v := env("admin-queues-readonly", ""); v != "" {
		if err := fs.Set("admin-queues-readonly", v); err != nil {
			o.envErr = errors.Join(o.envErr, fmt.Errorf("ASYNCGATE_ADMIN_QUEUES_READONLY: %v", err))
		}
	}
	o.resilience.register(fs, env)
	fs.BoolVar(&o.traceStdout, "trace-stdout", false, "write OpenTelemetry spans to stdout as JSON (env ASYNCGATE_TRACE_STDOUT); without it, spans go by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else nowhere")
	if v := env("trace-stdout", ""); v != "" {
		if err := fs.Set("trace-stdout", v); err != nil {
			o.envErr = errors.Join(o.envErr, fmt.Errorf("ASYNCGATE_TRACE_STDOUT: %v", err))
		}
	}
	fs.IntVar(&o.concurrency, "concurrency", 50, "order tasks run at once per worker (env ASYNCGATE_CONCURRENCY)")
	if v := env("concurrency", ""); v != "" {
		if err := fs.Set("concurrency", v); err != nil {
			o.envErr = errors.Join(o.envErr, fmt.Errorf("ASYNCGATE_CONCURRENCY: %v", err))
		}
	}
	return fs
}

func (o *options) logger(out io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
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
	cfg := app.Config{API: api, Worker: worker, Addr: o.addr, Logger: log, MetricsAddr: o.metricsAddr}
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
		cfg.Reconciler.Interval = o.reconcile
		if o.resumeAfter < 8*time.Second {
			errs = append(errs, errors.New("--resume-after must be at least 8s: the order lease (2/3 of it) must outlast a downstream call's 5s budget"))
		}
		cfg.ResumeAfter = o.resumeAfter
	}
	if err := o.resilienceConfig(&cfg, api, worker); err != nil {
		errs = append(errs, err)
	}
	return cfg, errors.Join(errs...)
}
