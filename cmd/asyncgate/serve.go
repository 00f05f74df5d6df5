package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/sim"
)

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return nil
}

// runServe runs the API and/or the worker against a real Redis.
func runServe(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string, api, worker bool) error {
	var o options
	fs := newFlags(args0(api, worker), stdout, getenv, &o, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.redisURL == "" {
		return errors.New("--redis is required (or ASYNCGATE_REDIS), such as redis://localhost:6379/0")
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
	if cfg.Webhooks, err = webhookConfig(getenv, false); err != nil {
		return err
	}
	cfg.Webhooks.Deliverer.EndpointConcurrency = o.endpointConc
	rdb, err := app.NewRedis(o.redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	cfg.Redis = rdb
	return runApp(ctx, cfg, log, func(a *app.App) {
		log.Info("asyncgate started", "api", api, "worker", worker, "addr", a.URL(), "metrics", a.MetricsURL())
	})
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

func runApp(ctx context.Context, cfg app.Config, log interface{ Info(string, ...any) }, started func(*app.App)) error {
	a, err := app.New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx, cfg.API); err != nil {
		return err
	}
	started(a)
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return a.Shutdown(sctx)
}

// runDev runs everything in one process with no setup.
func runDev(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	var o options
	fs := newFlags("dev", stdout, getenv, &o, true)
	if err := parse(fs, args); err != nil {
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
	if cfg.Webhooks, err = webhookConfig(getenv, true); err != nil {
		return err
	}
	cfg.Webhooks.Deliverer.EndpointConcurrency = o.endpointConc
	cfg.Redis = rdb
	cfg.Server.AdminInsecureCookies = true // plain http on 127.0.0.1
	return runApp(ctx, cfg, log, func(a *app.App) {
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
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", envOr(getenv, "ASYNCGATE_SIM_ADDR", ":9090"), "listen address (env ASYNCGATE_SIM_ADDR)")
	var lo listenOptions
	var envErr error
	env := func(n, def string) string { return envOr(getenv, envName(n), def) }
	lo.register(durFlag(fs, env, &envErr), intFlag(fs, env, &envErr))
	if err := parse(fs, args); err != nil {
		return err
	}
	if envErr != nil {
		return envErr
	}
	if lo.maxConns < 0 || lo.maxConnsPerIP < 0 {
		return errors.New("--max-conns and --max-conns-per-ip must not be negative")
	}
	srv, err := sim.New(sim.Config{}).StartWith(*addr, lo.config())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "simulator listening on %s (faults: %s/_sim/faults)\n", srv.URL, srv.URL)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}
