package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/internal/sim"
)

// Synopses of the service commands, the head of their help.
const (
	devSynopsis    = "Runs everything in one process: an in-memory Redis (or --redis), the simulator, the API,\nthe workers and the dashboard. Prints the URLs and a working API key and admin key\n(ASYNCGATE_DEV_API_KEY and ASYNCGATE_DEV_ADMIN_KEY fix them)."
	serveSynopsis  = "Runs the HTTP API and the order workers against Redis."
	apiSynopsis    = "Runs the HTTP API (and the dashboard) only; run workers with 'asyncgate worker'."
	workerSynopsis = "Runs the order workers, webhook deliveries and the reconciler only; no HTTP API."
	simSynopsis    = "Runs the portfolio and execution simulator, with fault knobs at /_sim/faults."
)

func synopsis(cmd string) string {
	switch cmd {
	case "dev":
		return devSynopsis
	case "serve":
		return serveSynopsis
	case "api":
		return apiSynopsis
	}
	return workerSynopsis
}

// runServe runs the API and/or the worker against a real Redis.
func runServe(ctx context.Context, cmd string, args []string, stdout io.Writer, getenv func(string) string) error {
	var o options
	cf := newFlags(cmd, getenv, &o)
	if err := cf.Parse(args, stdout, synopsis(cmd)); err != nil {
		return err
	}
	r := roleOf(cmd)
	api, worker := r.api, r.worker
	if err := o.checkRedis(); err != nil {
		return err
	}
	log, err := o.logger(stdout)
	if err != nil {
		return err
	}
	useRedisLogger(log)
	stopTracing, err := o.tracing(ctx, stdout, getenv, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg, err := o.appConfig(api, worker, log)
	if err != nil {
		return err
	}
	rdb, redisURL, err := o.newRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	cfg.Redis = rdb
	// The durability barrier is known once Redis was asked, after app.New
	// has checked the rest of the configuration and before anything
	// listens: a process that cannot keep --durability's promise does not
	// start.
	barrier := &checkedBarrier{}
	if api {
		cfg.Durability = barrier
	}
	check := func() (err error) {
		if err := waitRedis(ctx, rdb, redisURL, o.redisWait, log); err != nil {
			return err
		}
		barrier.b, err = o.durability.check(ctx, rdb, log)
		return err
	}
	return runApp(ctx, cfg, log, check, func(a *app.App) {
		log.Info("asyncgate started", "api", api, "worker", worker, "addr", a.URL(), "metrics", a.MetricsURL(),
			"durability", o.durability.mode, "durability_method", barrier.b.Method().String())
	})
}

// waitRedis pings Redis until it answers or wait has passed: a process whose
// Redis is unreachable stops at once with the address, instead of starting
// and logging connection errors forever. go-redis's own dial warnings are
// kept quiet meanwhile; the error says it all.
func waitRedis(ctx context.Context, rdb redis.UniversalClient, url string, wait time.Duration, log *slog.Logger) error {
	redis.SetLogger(redisLogger{slog.New(slog.DiscardHandler)})
	defer useRedisLogger(log)
	// A client of its own that dials once per ping, so that the error is
	// the dial's ("connection refused") rather than a timeout of retries.
	// A --redis-sentinel URL (its master_name is no option of ParseURL) is
	// pinged through rdb, which asks the sentinels where the master is.
	if opt, err := redis.ParseURL(url); err == nil {
		opt.PoolSize, opt.MaxRetries, opt.DialerRetries = 1, -1, 1
		probe := redis.NewClient(opt)
		defer probe.Close()
		rdb = probe
	}
	deadline := time.Now().Add(wait)
	var last error // the last error that says more than "timed out"
	for {
		pctx, cancel := context.WithTimeout(ctx, min(time.Second, time.Until(deadline)))
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if last == nil || !errors.Is(err, context.DeadlineExceeded) {
			last = err
		}
		if time.Now().Add(250 * time.Millisecond).After(deadline) {
			return fmt.Errorf("redis at %s did not answer within %s (--redis-wait): %v", redactURL(url), human.Duration(wait), last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// redactURL hides a password in a Redis URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the --redis URL"
	}
	// A --redis-sentinel URL may carry the master's password in its query.
	if q := u.Query(); q.Has("password") || q.Has("sentinel_password") {
		for _, k := range []string{"password", "sentinel_password"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func args0(api, worker bool) string {
	switch {
	case api && worker:
		return "serve"
	case api:
		return "api"
	}
	return "worker"
}

// How long a stopping service process (SIGTERM) takes at most: its HTTP
// listeners get listenerShutdownTimeout to finish the requests in flight, then
// a worker gets taskShutdownTimeout for its running tasks (tasks cut short are
// put back and retried). deploy/kubernetes sets each pod's grace period above
// their sum (TestKubernetesManifests checks it).
const (
	listenerShutdownTimeout = 15 * time.Second
	taskShutdownTimeout     = 10 * time.Second
)

// runApp wires the app (which checks the config), waits for Redis, then runs
// the app until ctx ends.
func runApp(ctx context.Context, cfg app.Config, log interface{ Info(string, ...any) }, waitRedis func() error, started func(*app.App)) error {
	a, err := app.New(cfg)
	if err != nil {
		return err
	}
	if err := waitRedis(); err != nil {
		return err
	}
	if err := a.Start(ctx, cfg.API); err != nil {
		return err
	}
	started(a)
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), listenerShutdownTimeout)
	defer cancel()
	return a.Shutdown(sctx)
}

// runDev runs everything in one process with no setup.
func runDev(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	var o options
	cf := newFlags("dev", getenv, &o)
	if err := cf.Parse(args, stdout, devSynopsis); err != nil {
		return err
	}
	log, err := o.logger(stdout)
	if err != nil {
		return err
	}
	useRedisLogger(log)
	stopTracing, err := o.tracing(ctx, stdout, getenv, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	key := getenv("ASYNCGATE_DEV_API_KEY")
	if key == "" {
		key = "ag_dev_" + randomToken()
	}
	if o.apiKeys == "" {
		o.apiKeys = key + "=dev"
	}
	adminKey := getenv("ASYNCGATE_DEV_ADMIN_KEY")
	if adminKey == "" {
		adminKey = "ag_dev_admin_" + randomToken()
	}
	if o.adminKeys == "" {
		o.adminKeys = adminKey + "=dev"
	}
	s := sim.New(sim.Config{Logger: log})
	simSrv, err := s.StartWith("127.0.0.1:0", o.listen.config())
	if err != nil {
		return err
	}
	defer simSrv.Shutdown(context.Background())
	if o.portfolioURL == "" {
		o.portfolioURL = simSrv.URL
	}
	if o.executionURL == "" {
		o.executionURL = simSrv.URL
	}
	redisURL := o.redisURL
	if redisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("start in-memory redis: %w", err)
		}
		defer mr.Close()
		redisURL = "redis://" + mr.Addr()
	}
	rdb, err := app.NewRedis(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cfg, err := o.appConfig(true, true, log)
	if err != nil {
		return err
	}
	cfg.Redis = rdb
	cfg.Admin.InsecureCookies = true // plain http on 127.0.0.1
	return runApp(ctx, cfg, log, func() error { return waitRedis(ctx, rdb, redisURL, o.redisWait, log) }, func(a *app.App) {
		fmt.Fprintf(stdout, `
asyncgate dev is running.

  API        %[1]s
  API key    %[2]s   (tenant "dev"; set ASYNCGATE_DEV_API_KEY to fix it)
  Admin key  %[5]s   (reaches /admin; set ASYNCGATE_DEV_ADMIN_KEY to fix it)
  API docs   %[1]s/docs
  Metrics    %[1]s/metrics
  Dashboard  %[1]s/admin/   (log in with the admin key)
  Queues     %[1]s/admin/queues
  Simulator  %[3]s   (faults: curl %[3]s/_sim/faults)
  Redis      %[4]s
  Durability relaxed: a 202 does not wait for disk or replicas (serve, api and worker run --durability strict)

Try:
  curl -s -X POST %[1]s/v1/orders -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' \
    -d '{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market"}'

`, a.URL(), key, simSrv.URL, redisDesc(o.redisURL), adminKey)
	})
}

func redisDesc(url string) string {
	if url == "" {
		return "in-memory (miniredis): data is gone when the process stops"
	}
	return url
}

func randomToken() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// runSim runs the downstream simulator.
func runSim(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	cf := newCmdFlags("sim", getenv)
	var addr string
	cf.Group("Simulator").String(&addr, "sim-addr", "ADDR", ":9090", "listen address (--addr works too)")
	// --addr is the name the simulator's flag has always had; --sim-addr matches its variable.
	cf.fs.Var(cf.fs.Lookup("sim-addr").Value, "addr", "listen address (same as --sim-addr)")
	var lo listenOptions
	lo.register(cf)
	if err := cf.Parse(args, stdout, simSynopsis); err != nil {
		return err
	}
	if cf.envErr != nil {
		return cf.envErr
	}
	srv, err := sim.New(sim.Config{}).StartWith(addr, lo.config())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "simulator listening on %s (faults: %s/_sim/faults)\n", srv.URL, srv.URL)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
