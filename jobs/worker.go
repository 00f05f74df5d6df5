package jobs

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// WorkerConfig configures the Asynq server that runs the handlers.
type WorkerConfig struct {
	// Concurrency is the number of order tasks (the critical and orders
	// queues) running at once. Defaults to 50.
	Concurrency int
	// WebhookConcurrency is the number of webhook tasks (fan-outs and
	// deliveries, the webhooks queue) running at once, in an Asynq server
	// of their own: a slow receiver can only fill these slots, never the
	// orders'. Defaults to 50.
	WebhookConcurrency int
	// PollInterval is how long a worker whose queues were empty waits
	// before it looks again (Asynq's TaskCheckInterval): after a wake-up
	// (see IdleWait), or always without one. Defaults to 10ms.
	PollInterval time.Duration
	// IdleWait is how long an idle worker waits for a task to arrive on
	// its queues before it looks anyway (decision 57): it blocks on the
	// queues' pending lists and looks PollInterval after a task arrives.
	// Negative: no waiting, the worker polls every PollInterval (about a
	// hundred dequeue scripts a second per queue). Only for a
	// *redis.Client to one server; Sentinel and cluster clients poll.
	// Defaults to 1s.
	IdleWait time.Duration
	// DelayedPollInterval is how often scheduled and retry tasks are moved
	// to their queues: a retry waits up to this much past its delay.
	// Defaults to 1s.
	DelayedPollInterval time.Duration
	// Hooks are added to the Asynq servers' own Redis client, which the
	// worker makes when it waits for work (IdleWait): hooks that count or
	// trace round trips on the client given to NewWorker see the rest.
	Hooks []redis.Hook
	// ShutdownTimeout is how long a stopping worker waits for handlers. Defaults to 10s.
	ShutdownTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Concurrency == 0 {
		c.Concurrency = 50
	}
	if c.WebhookConcurrency == 0 {
		c.WebhookConcurrency = 50
	}
	if c.PollInterval == 0 {
		c.PollInterval = 10 * time.Millisecond
	}
	if c.IdleWait == 0 {
		c.IdleWait = time.Second
	}
	if c.DelayedPollInterval == 0 {
		c.DelayedPollInterval = time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Worker runs the order handlers (and any extra handlers registered on Mux)
// in two Asynq servers that share no capacity: one for the critical and
// orders queues, one for the webhooks queue.
type Worker struct {
	srv, hooks *asynq.Server
	// Mux routes task types to handlers; register more before Start.
	Mux *asynq.ServeMux
	// delays are the retry delays of task types that do not use the saga's.
	delays map[string]asynq.RetryDelayFunc
	// idle and its client, when idle servers wait for work (IdleWait).
	idle   *idleWaiter
	hooked *redis.Client
	// build makes the servers (and the hooked client, which holds
	// goroutines of its own until closed): Start calls it, so that a
	// worker never started holds nothing that Shutdown must release.
	build func()
}

// NewWorker returns a worker for saga on rdb.
func NewWorker(rdb redis.UniversalClient, saga *Saga, cfg WorkerConfig) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{delays: make(map[string]asynq.RetryDelayFunc)}
	mux := asynq.NewServeMux()
	mux.Use(TraceTasks) // a consumer span per attempt, in the enqueuer's trace
	mux.HandleFunc(TypeProcessOrder, saga.ProcessTask)
	mux.HandleFunc(TypeCompensate, tracedTask("saga.compensate", saga.measured("compensate", saga.CompensateTask)))
	mux.HandleFunc(TypeRelease, tracedTask("saga.release", saga.measured("release", saga.ReleaseTask)))
	w.Mux = mux
	// The options are copied now: once the client is in use, go-redis
	// writes to them while it sets up connections.
	var hookedOpts *redis.Options
	if c, ok := rdb.(*redis.Client); ok && cfg.IdleWait > 0 && c.Options().Addr != failoverAddr {
		hookedOpts = cloneOptions(c.Options())
	}
	w.build = func() { w.buildServers(rdb, hookedOpts, saga, cfg) }
	return w
}

// buildServers makes the two Asynq servers (and, when idle servers wait
// for work — hookedOpts set — their hooked client).
func (w *Worker) buildServers(rdb redis.UniversalClient, hookedOpts *redis.Options, saga *Saga, cfg WorkerConfig) {
	asynqRDB := rdb
	if hookedOpts != nil {
		// The servers' own client carries the waiter's hook, so that it
		// sees only their dequeues; the waiter blocks on rdb.
		w.hooked = redis.NewClient(hookedOpts)
		w.idle = newIdleWaiter(rdb, cfg.IdleWait)
		for _, h := range cfg.Hooks {
			w.hooked.AddHook(h)
		}
		w.hooked.AddHook(w.idle)
		asynqRDB = w.hooked
	}
	server := func(concurrency int, queues map[string]int) *asynq.Server {
		if w.idle != nil {
			w.idle.addServer(queues)
		}
		return asynq.NewServerFromRedisClient(asynqRDB, asynq.Config{
			Concurrency:              concurrency,
			Queues:                   queues,
			TaskCheckInterval:        cfg.PollInterval,
			DelayedTaskCheckInterval: cfg.DelayedPollInterval,
			RetryDelayFunc:           w.retryDelay(saga.RetryDelay),
			IsFailure:                IsFailure,
			ShutdownTimeout:          cfg.ShutdownTimeout,
			Logger:                   asynqLogger{cfg.Logger},
			LogLevel:                 asynq.WarnLevel,
		})
	}
	// Compensation first: it frees funds and ends orders.
	srv := server(cfg.Concurrency, map[string]int{QueueCritical: 6, QueueOrders: 3})
	// Webhook fan-outs and deliveries in slots of their own (decision 29).
	w.hooks = server(cfg.WebhookConcurrency, map[string]int{QueueWebhooks: 1})
	w.srv = srv
}

// failoverAddr is the Addr of a Sentinel (failover) client's options. Its
// clone would not have its connections dropped when the master changes
// (the failover drains only its own client's pool), so such a worker polls.
const failoverAddr = "FailoverClient"

// cloneOptions copies opt for a second client on the same server.
func cloneOptions(opt *redis.Options) *redis.Options {
	o := *opt
	o.PushNotificationProcessor = nil // the first client's, with its handlers registered
	if o.MaintNotificationsConfig != nil {
		m := *o.MaintNotificationsConfig
		o.MaintNotificationsConfig = &m
	}
	return &o
}

// SetRetryDelay makes failed tasks of taskType wait f's delay instead of
// the saga's. Call it before Start.
func (w *Worker) SetRetryDelay(taskType string, f asynq.RetryDelayFunc) { w.delays[taskType] = f }

// retryDelay dispatches on the task type, falling back to def.
func (w *Worker) retryDelay(def asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		if f := w.delays[t.Type()]; f != nil {
			return f(n, err, t)
		}
		return def(n, err, t)
	}
}

// Start starts processing in the background. Both servers route through Mux.
func (w *Worker) Start() error {
	if w.srv == nil {
		w.build()
	}
	if err := w.srv.Start(w.Mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	if err := w.hooks.Start(w.Mux); err != nil {
		w.srv.Shutdown()
		return fmt.Errorf("start webhook worker: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks and waits for running handlers, of both
// servers at once (each up to WorkerConfig.ShutdownTimeout).
func (w *Worker) Shutdown() {
	if w.srv == nil {
		return // never started: nothing runs, nothing is held
	}
	if w.idle != nil {
		w.idle.stop() // a waiting dequeue would hold the shutdown up
	}
	var wg sync.WaitGroup
	wg.Go(w.hooks.Shutdown)
	w.srv.Shutdown()
	wg.Wait()
	if w.hooked != nil {
		w.hooked.Close()
	}
}

// asynqLogger sends Asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
	panic(fmt.Sprint(args...))
}
