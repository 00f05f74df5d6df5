// Package app wires asyncgate's parts into a running process: the API, the
// workers, the reconciler and their shared Redis. cmd/asyncgate reads flags
// and environment into a Config; tests build the same App directly.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/listen"
	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// Config configures an App.
type Config struct {
	// Redis is the shared client. Required (see NewRedis).
	Redis redis.UniversalClient
	// API serves the HTTP API on Addr. Worker runs order tasks and the reconciler.
	API, Worker bool
	// Addr is the API's listen address. Defaults to ":8080".
	Addr string
	// Listen sets the timeouts and connection caps of the API's and the
	// metrics' listeners. Zero values take listen's defaults.
	Listen listen.Config

	Server     server.Config
	Admin      admin.Config
	Portfolio  downstream.Config
	Execution  downstream.Config
	Enqueuer   jobs.EnqueuerConfig
	Saga       jobs.SagaConfig
	WorkerPool jobs.WorkerConfig
	Reconciler jobs.ReconcilerConfig
	Store      orders.StoreConfig
	Webhooks   WebhooksConfig

	// IsolatedBreakers keeps each process's downstream breakers to itself (the baseline of
	// the resilience benchmarks). By default processes share their trips through Redis.
	IsolatedBreakers bool
	// PortfolioReadTimeout bounds the portfolio call of GET /v1/portfolios (the API needs
	// Portfolio.BaseURL for it). Defaults to 1s.
	PortfolioReadTimeout time.Duration
	// AdminQueuesReadOnly makes the queue dashboard (/admin/queues) read-only.
	AdminQueuesReadOnly bool
	// QueueShards is the number of shards of each kind of queue
	// (--queue-shards, 1 to jobs.MaxQueueShards; decision 72). It sets the
	// shards of the Enqueuer, WorkerPool and Webhooks.Notifier configs.
	// Defaults to jobs.DefaultQueueShards.
	QueueShards int
	// ResumeAfter bounds how long an order held by a worker that died waits
	// before another worker resumes it. It sets Saga.LeaseTTL to two thirds
	// of it, Reconciler.LeaseCheck to a sixth and Reconciler.ResumeAfter
	// (orders whose task a worker took but never leased) to it, unless they
	// are set. A
	// shorter bound takes a stalled but live worker's orders away sooner
	// (safe: writes are fenced, downstream calls idempotent); the lease
	// must outlast a downstream call's Budget. Defaults to 30s.
	ResumeAfter time.Duration

	// Durability is the barrier the API passes before it acknowledges a
	// write (a *durability.Barrier from durability.Check); nil waits for
	// nothing, as under --durability relaxed.
	Durability server.Durability

	Logger *slog.Logger
	// Metrics are the process's Prometheus metrics, served at /metrics by
	// the API and on MetricsAddr. Nil: a registry of the App's own.
	Metrics *telemetry.Metrics
	// MetricsAddr, if set, is a listen address serving only GET /metrics
	// (and GET /healthz): the metrics of a worker-only process, or kept
	// off the public port.
	MetricsAddr string
	// PprofAddr, if set, is a listen address serving only Go's profiles
	// (net/http/pprof, under /debug/pprof/): opt-in, for a live process,
	// to be kept off public networks (a profile shows the code, not
	// secrets, but costs CPU while it runs).
	PprofAddr string
}

// App is a running asyncgate process.
type App struct {
	cfg   Config
	Store *orders.Store
	Keys  *apikeys.Store // with API only
	API   *server.Server
	Enq   *jobs.Enqueuer
	Saga  *jobs.Saga
	// Webhooks and Notifier are the webhook store and tasks.
	Webhooks  *webhooks.Store
	Notifier  *jobs.Notifier
	deliverer *webhooks.Deliverer
	// Portfolio and Execution are the worker's downstream clients (nil without worker).
	Portfolio *downstream.Portfolio
	Execution *downstream.Execution
	shared    *downstream.Shared // nil with IsolatedBreakers
	reader    *downstream.Reader // GET /v1/portfolios; nil without a portfolio URL
	client    *asynq.Client
	worker    *jobs.Worker
	recon     *jobs.Reconciler
	watcher   *orders.Watcher
	feedWatch *webhooks.FeedWatcher
	httpSrv   *http.Server
	ln        net.Listener
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	metrics    *telemetry.Metrics
	metricsLn  net.Listener
	metricsSrv *http.Server
	pprofSrv   *http.Server
	pprofLn    net.Listener
}

// NewRedis returns a client for a redis:// or rediss:// URL with a pool
// sized for a busy API and worker.
func NewRedis(url string) (redis.UniversalClient, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = 128
	}
	return redis.NewClient(opt), nil
}

// New wires an App. Nothing runs until Start.
func New(cfg Config) (*App, error) {
	if cfg.Redis == nil {
		return nil, errors.New("app: no Redis client")
	}
	if !cfg.API && !cfg.Worker {
		return nil, errors.New("app: neither API nor worker enabled")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = telemetry.NewMetrics()
	}
	if cfg.Webhooks.Deliverer.Metrics == nil {
		cfg.Webhooks.Deliverer.Metrics = cfg.Metrics
	}
	if cfg.QueueShards == 0 {
		cfg.QueueShards = jobs.DefaultQueueShards
	}
	if err := jobs.ValidateQueueShards(cfg.QueueShards); err != nil {
		return nil, err
	}
	cfg.Enqueuer.Shards = cfg.QueueShards
	cfg.WorkerPool.Shards = cfg.QueueShards
	cfg.Webhooks.Notifier.Shards = cfg.QueueShards
	a := &App{cfg: cfg, metrics: cfg.Metrics}
	a.Store = orders.NewStore(cfg.Redis, cfg.Store)
	a.client = asynq.NewClientFromRedisClient(cfg.Redis)
	ecfg := cfg.Enqueuer
	ecfg.Redis = cfg.Redis // the order store's: the API writes an order's task in its create's pipeline
	a.Enq = jobs.NewEnqueuer(a.client, ecfg)
	if err := a.newWebhooks(); err != nil {
		return nil, err
	}
	if !cfg.IsolatedBreakers {
		a.shared = downstream.NewShared(cfg.Redis, downstream.SharedConfig{Logger: cfg.Logger})
	}
	if cfg.API {
		scfg := cfg.Server
		scfg.Logger = cfg.Logger
		scfg.Metrics = cfg.Metrics
		a.Keys = apikeys.NewStore(cfg.Redis, apikeys.Config{})
		acfg := cfg.Admin
		acfg.Logger = cfg.Logger
		if acfg.MaxBodyBytes == 0 {
			acfg.MaxBodyBytes = scfg.MaxBodyBytes
		}
		dash, err := admin.New(acfg, admin.Deps{Orders: a.Store, Webhooks: a.Webhooks, WebhookQueue: a.Notifier,
			Queues: queueInspector{a.Inspector()}, Breakers: breakerReport{a},
			QueuesUI: queuesUI(cfg.Redis, cfg.AdminQueuesReadOnly), Redis: cfg.Redis})
		if err != nil {
			return nil, err
		}
		deps := server.Deps{Orders: a.Store, Queue: a.Enq, Redis: pinger{cfg.Redis},
			Keys: a.Keys, RedisClient: cfg.Redis, Breakers: breakerReport{a},
			Webhooks: tenantDeliveries{a.Webhooks, a.Notifier}, WebhookQueue: a.Notifier, CallbackURLs: a.Webhooks, Events: a.Webhooks, EndpointTester: a.deliverer,
			Dashboard: dash, MetricsHandler: cfg.Metrics.Handler()}
		deps.Durability = cfg.Durability
		if a.reader, err = a.newPortfolioReader(); err != nil {
			return nil, err
		}
		if a.reader != nil {
			deps.Portfolio = portfolioReader{a.reader}
		}
		api, err := server.New(scfg, deps)
		if err != nil {
			return nil, err
		}
		a.API = api
	}
	if cfg.Worker {
		p, err := downstream.NewPortfolio(a.downstreamConfig(cfg.Portfolio))
		if err != nil {
			return nil, fmt.Errorf("portfolio: %w", err)
		}
		e, err := downstream.NewExecution(a.downstreamConfig(cfg.Execution))
		if err != nil {
			return nil, fmt.Errorf("execution: %w", err)
		}
		a.Portfolio, a.Execution = p, e
		resume := cfg.ResumeAfter
		if resume == 0 {
			resume = 30 * time.Second
		}
		sc := cfg.Saga
		if sc.LeaseTTL == 0 {
			sc.LeaseTTL = resume * 2 / 3
		}
		sc.Logger = cfg.Logger
		sc.Metrics = cfg.Metrics
		sc.OnTerminalFunc = a.onTerminal(sc.OnTerminalFunc)
		if sc.QueueLag == 0 {
			sc.QueueLag = cfg.WorkerPool.DelayedPollInterval // zero: the saga's default, the worker's
		}
		a.Saga = jobs.NewSaga(a.Store, p, e, a.Enq, sc)
		wc := cfg.WorkerPool
		wc.Logger = cfg.Logger
		a.worker = jobs.NewWorker(cfg.Redis, a.Saga, wc)
		a.Notifier.Register(a.worker)
		rc := cfg.Reconciler
		if rc.LeaseCheck == 0 {
			rc.LeaseCheck = resume / 6
		}
		if rc.ResumeAfter == 0 {
			rc.ResumeAfter = resume
		}
		rc.Logger = cfg.Logger
		rc.OutboxFunc = a.Notifier.RedriveOutbox
		a.recon = jobs.NewReconciler(a.Store, asynq.NewInspectorFromRedisClient(cfg.Redis), a.Enq, rc)
	}
	a.wireMetrics()
	return a, nil
}

type pinger struct{ rdb redis.UniversalClient }

func (p pinger) Ping(ctx context.Context) error { return p.rdb.Ping(ctx).Err() }

// Handler is the API's HTTP handler (nil without API).
func (a *App) Handler() http.Handler {
	if a.API == nil {
		return nil
	}
	return a.API
}

// Inspector returns an Asynq inspector on the app's Redis.
func (a *App) Inspector() *asynq.Inspector { return asynq.NewInspectorFromRedisClient(a.cfg.Redis) }

// Reconciler is the worker's reconciler (nil without worker).
func (a *App) Reconciler() *jobs.Reconciler { return a.recon }

// Worker is the Asynq worker (nil without worker); register more handlers on its Mux
// before Start.
func (a *App) Worker() *jobs.Worker { return a.worker }

// Start runs the enabled parts in the background. With the API enabled
// and listen true, it listens on Addr.
func (a *App) Start(ctx context.Context, listen bool) error {
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if a.shared != nil {
		a.shared.Start(ctx)
	}
	if err := a.startMetricsListener(); err != nil {
		return fmt.Errorf("metrics listen: %w", err)
	}
	if err := a.startPprofListener(); err != nil {
		return fmt.Errorf("pprof listen: %w", err)
	}
	if a.API != nil {
		a.watcher = a.Store.Watch(ctx)
		a.feedWatch = a.Webhooks.WatchFeed(ctx)
		if listen {
			ln, err := a.cfg.Listen.Listen(a.cfg.Addr)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			a.ln = ln
			a.httpSrv = a.cfg.Listen.Server(a.API)
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				if err := a.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					a.cfg.Logger.Error("http server stopped", "err", err)
				}
			}()
		}
	}
	if a.worker != nil {
		if err := a.worker.Start(); err != nil {
			return err
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.recon.Run(ctx) }()
	}
	return nil
}

// URL is the API's base URL once listening.
func (a *App) URL() string {
	if a.ln == nil {
		return ""
	}
	addr := a.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// Shutdown stops taking requests and tasks, and waits for what runs.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if a.httpSrv != nil {
		errs = append(errs, a.httpSrv.Shutdown(ctx))
	}
	if a.pprofSrv != nil {
		errs = append(errs, a.pprofSrv.Shutdown(ctx))
	}
	if a.metricsSrv != nil {
		errs = append(errs, a.metricsSrv.Shutdown(ctx))
	}
	if a.API != nil {
		a.API.Close() // write the idempotency records still pending
	}
	if a.worker != nil {
		a.worker.Shutdown()
	}
	if a.cancel != nil {
		a.cancel()
	}
	if a.feedWatch != nil {
		a.feedWatch.Close()
	}
	if a.watcher != nil {
		a.watcher.Close()
	}
	if a.shared != nil {
		a.shared.Close()
	}
	a.wg.Wait()
	a.deliverer.Close()
	return errors.Join(errs...) // the asynq client shares cfg.Redis: the owner closes it

}
