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
	// PollInterval is how often an idle worker looks for new tasks. Asynq's
	// default of 1s would add up to a second to every order. Defaults to 10ms.
	PollInterval time.Duration
	// DelayedPollInterval is how often scheduled and retry tasks are moved
	// to their queues. Defaults to 100ms.
	DelayedPollInterval time.Duration
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
	if c.DelayedPollInterval == 0 {
		c.DelayedPollInterval = 100 * time.Millisecond
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
}

// NewWorker returns a worker for saga on rdb.
func NewWorker(rdb redis.UniversalClient, saga *Saga, cfg WorkerConfig) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{delays: make(map[string]asynq.RetryDelayFunc)}
	server := func(concurrency int, queues map[string]int) *asynq.Server {
		return asynq.NewServerFromRedisClient(rdb, asynq.Config{
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
	mux := asynq.NewServeMux()
	mux.Use(TraceTasks) // a consumer span per attempt, in the enqueuer's trace
	mux.HandleFunc(TypeProcessOrder, saga.ProcessTask)
	mux.HandleFunc(TypeCompensate, tracedTask("saga.compensate", saga.measured("compensate", saga.CompensateTask)))
	mux.HandleFunc(TypeRelease, tracedTask("saga.release", saga.measured("release", saga.ReleaseTask)))
	w.srv, w.Mux = srv, mux
	return w
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
	var wg sync.WaitGroup
	wg.Go(w.hooks.Shutdown)
	w.srv.Shutdown()
	wg.Wait()
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
