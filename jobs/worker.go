package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	// its queues before it looks anyway (decisions 57, 73): it blocks on
	// the queues' pending lists (one BLMOVE each per IdleWait, on a client
	// of its own) and looks PollInterval after a task arrives; the wait
	// bounds only how late an unpaused queue is seen. Negative: no
	// waiting, the worker polls every PollInterval (one EXISTS per round
	// while the queues are empty; on a cluster one per queue). For a
	// *redis.Client to one server, a cluster client, and a Sentinel
	// client given with its Failover options; a Sentinel client without
	// them polls, running a dequeue script per queue each round (decision
	// 84). Defaults to 5s.
	IdleWait time.Duration
	// Failover are the options the Sentinel (failover) client given to
	// NewWorker was made from. The worker makes its servers' own client
	// and the idle waiter's blocking client as new failover clients of
	// copies of them: each follows the master itself and drops its
	// connections on a failover, so the hook and the idle waits work as
	// on one Redis (decision 84). Ignored for other clients.
	Failover *redis.FailoverOptions
	// DelayedPollInterval is how often scheduled and retry tasks are moved
	// to their queues: a retry waits up to this much past its delay.
	// Defaults to 1s.
	DelayedPollInterval time.Duration
	// Shards is the number of shards of each kind of queue
	// (--queue-shards). The worker consumes more when Asynq's queue set
	// shows more (an enqueuer with a larger count, or tasks left by one
	// before a change to a smaller one): see SeenShards. Defaults to
	// DefaultQueueShards.
	Shards int
	// Hooks are added to the Asynq servers' own Redis client, which the
	// worker makes on a *redis.Client to one server: hooks that count or
	// trace round trips on the client given to NewWorker see the rest.
	Hooks []redis.Hook
	// ShardCheckInterval is how often a running worker looks at Asynq's
	// queue set for shards of a larger count (an API rolled out with a
	// larger --queue-shards) and starts consuming them. Defaults to 30s.
	ShardCheckInterval time.Duration
	// RetireShardsAfter is how long a shard beyond Shards must have held
	// no task (in any state, archived and completed included), seen so at
	// every ShardCheckInterval, before the worker takes it out of Asynq's
	// queue set, so that workers started later no longer consume it
	// (decision 96). Defaults to 10m; negative: never.
	RetireShardsAfter time.Duration
	// ScriptPerQueue sends every script of the Asynq servers' per-queue
	// loops, even on queues known to be empty, as before decision 73: the
	// baseline of the shard benchmarks, not for production.
	ScriptPerQueue bool
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
		c.IdleWait = 5 * time.Second
	}
	if c.DelayedPollInterval == 0 {
		c.DelayedPollInterval = time.Second
	}
	c.Shards = shardsOrDefault(c.Shards)
	if c.ShardCheckInterval == 0 {
		c.ShardCheckInterval = 30 * time.Second
	}
	if c.RetireShardsAfter == 0 {
		c.RetireShardsAfter = 10 * time.Minute
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
	hooked redis.UniversalClient
	// build makes the servers (and the hooked client, which holds
	// goroutines of its own until closed): Start calls it, so that a
	// worker never started holds nothing that Shutdown must release.
	build func()
	// server makes an Asynq server of the worker's on the given queues.
	server func(concurrency int, queues map[string]int) *asynq.Server
	rdb    redis.UniversalClient
	cfg    WorkerConfig

	mu sync.Mutex
	// shards is the number of shards of each kind consumed; extra are the
	// servers started for the shards that appeared since Start.
	shards int
	extra  []*asynq.Server
	// watching ends the look for new shards; watched is closed when it has.
	watching chan struct{}
	watched  chan struct{}
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
	var hk hookedOptions
	switch c := rdb.(type) {
	case *redis.Client:
		if c.Options().Addr != failoverAddr {
			hk.single, hk.singleBlock = cloneOptions(c.Options()), cloneOptions(c.Options())
		} else if cfg.Failover != nil {
			hk.failover, hk.failoverBlock = cloneFailoverOptions(cfg.Failover), cloneFailoverOptions(cfg.Failover)
		}
	case *redis.ClusterClient:
		hk.cluster, hk.clusterBlock = cloneClusterOptions(c.Options()), cloneClusterOptions(c.Options())
	}
	w.build = func() { w.buildServers(rdb, hk, saga, cfg) }
	return w
}

// hookedOptions are the options of the Asynq servers' own client and of
// the waiter's blocking client: of a single Redis, of a Sentinel-managed
// master (new failover clients) or of a cluster, or none (a Sentinel
// client without WorkerConfig.Failover: no hook).
type hookedOptions struct {
	single, singleBlock     *redis.Options
	failover, failoverBlock *redis.FailoverOptions
	cluster, clusterBlock   *redis.ClusterOptions
}

// buildServers makes the two Asynq servers (and, on a single Redis, a
// Sentinel-managed master or a cluster, their hooked client).
func (w *Worker) buildServers(rdb redis.UniversalClient, hk hookedOptions, saga *Saga, cfg WorkerConfig) {
	asynqRDB := rdb
	if hk.single != nil || hk.failover != nil || hk.cluster != nil {
		// The servers' own client carries the waiter's hook, so that it
		// sees only their scripts; the waiter blocks on a client of its own,
		// with a connection (per node) for each pending list.
		var newBlock func(int) redis.UniversalClient
		var pipe func() redis.Pipeliner
		switch {
		case hk.single != nil:
			w.hooked = redis.NewClient(hk.single)
			newBlock = func(n int) redis.UniversalClient {
				o := hk.singleBlock
				o.PoolSize, o.MinIdleConns, o.MaxIdleConns = n, 0, 0
				return redis.NewClient(o)
			}
		case hk.failover != nil:
			// New failover clients, not clones of rdb's options: each runs
			// its own sentinel watcher and drains its own pool when the
			// master changes (decision 84).
			w.hooked = redis.NewFailoverClient(hk.failover)
			newBlock = func(n int) redis.UniversalClient {
				o := hk.failoverBlock
				o.PoolSize, o.MinIdleConns, o.MaxIdleConns = n, 0, 0
				return redis.NewFailoverClient(o)
			}
		default:
			c := redis.NewClusterClient(hk.cluster)
			w.hooked, pipe = c, c.Pipeline
			newBlock = func(n int) redis.UniversalClient {
				o := hk.clusterBlock
				o.PoolSize, o.MinIdleConns, o.MaxIdleConns = n, 0, 0
				return redis.NewClusterClient(o)
			}
		}
		if cfg.IdleWait <= 0 {
			newBlock = nil
		}
		w.idle = newIdleWaiter(newBlock, pipe, cfg.IdleWait, cfg.PollInterval)
		w.idle.sendAll = cfg.ScriptPerQueue
		// The waiter first: the hooks of cfg see what it sends (its EXISTS
		// included), not the scripts it answers itself.
		w.hooked.AddHook(w.idle)
		for _, h := range cfg.Hooks {
			w.hooked.AddHook(h)
		}
		asynqRDB = w.hooked
	}
	w.rdb, w.cfg = rdb, cfg
	server := func(concurrency int, queues map[string]int) *asynq.Server {
		if w.idle != nil {
			w.idle.addServer(slices.Sorted(maps.Keys(queues)))
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
	w.server = server
	n := w.consumedShards(rdb, cfg)
	w.srv, w.hooks = w.serversFor(0, n)
	if w.idle != nil {
		w.idle.start()
	}
	w.shards = n
}

// serversFor makes the two servers of shards lo..hi-1 of every kind.
func (w *Worker) serversFor(lo, hi int) (orders, hooks *asynq.Server) {
	// Compensation first: it frees funds and ends orders. Each shard keeps
	// its kind's weight, so a critical shard is picked before an orders
	// shard two times in three, as before sharding (decision 72).
	orderQueues, hookQueues := map[string]int{}, map[string]int{}
	for i := lo; i < hi; i++ {
		orderQueues[ShardQueue(QueueCritical, i)] = 6
		orderQueues[ShardQueue(QueueOrders, i)] = 3
		// Webhook fan-outs and deliveries in slots of their own (decision 29).
		hookQueues[ShardQueue(QueueWebhooks, i)] = 1
	}
	return w.server(w.cfg.Concurrency, orderQueues), w.server(w.cfg.WebhookConcurrency, hookQueues)
}

// watchShards looks at Asynq's queue set every ShardCheckInterval and,
// when it shows more shards than the worker consumes, starts a pair of
// servers for the new ones (with slots of their own: until the worker
// restarts, it runs up to twice its concurrency). When the set shows no
// more, it retires the empty shards beyond its own count (shardRetirer).
func (w *Worker) watchShards() {
	defer close(w.watched)
	t := time.NewTicker(w.cfg.ShardCheckInterval)
	defer t.Stop()
	var retirer *shardRetirer
	if w.cfg.RetireShardsAfter > 0 {
		retirer = &shardRetirer{rdb: w.rdb, shards: w.cfg.Shards, after: w.cfg.RetireShardsAfter,
			log: w.cfg.Logger, empty: make(map[string]time.Time)}
	}
	for {
		select {
		case <-w.watching:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		seen, err := SeenShards(ctx, w.rdb)
		cancel()
		w.mu.Lock()
		have := w.shards
		w.mu.Unlock()
		if retirer != nil && err == nil && seen <= have {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := retirer.check(ctx, have); err != nil {
				w.cfg.Logger.Warn("worker: could not look at the shards beyond the shard count", "shards", w.cfg.Shards, "err", err)
			}
			cancel()
		}
		if err != nil || seen <= have {
			continue
		}
		o, h := w.serversFor(have, seen)
		if err := o.Start(w.Mux); err != nil {
			w.cfg.Logger.Warn("worker: could not start the servers of new shards", "from", have, "to", seen, "err", err)
			continue
		}
		if err := h.Start(w.Mux); err != nil {
			o.Shutdown()
			w.cfg.Logger.Warn("worker: could not start the servers of new shards", "from", have, "to", seen, "err", err)
			continue
		}
		w.cfg.Logger.Info("worker: consuming new shards", "from", have, "to", seen)
		w.mu.Lock()
		w.shards, w.extra = seen, append(w.extra, o, h)
		w.mu.Unlock()
	}
}

// consumedShards is how many shards of each kind the worker consumes: its
// own count, or more when Asynq's queue set shows more, so that the
// shards of other enqueuers drain.
func (w *Worker) consumedShards(rdb redis.UniversalClient, cfg WorkerConfig) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seen, err := SeenShards(ctx, rdb)
	if err != nil {
		cfg.Logger.Warn("worker: could not read Asynq's queue set; consuming the configured shards only", "shards", cfg.Shards, "err", err)
	}
	if seen > cfg.Shards {
		cfg.Logger.Info("worker: consuming the shards left by another shard count", "shards", cfg.Shards, "consumed", seen)
		return seen
	}
	return cfg.Shards
}

// Shards is the number of shards of each kind the worker consumes (known
// once started).
func (w *Worker) Shards() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shards
}

// failoverAddr is the Addr of a Sentinel (failover) client's options. Its
// clone would not have its connections dropped when the master changes
// (the failover drains only its own client's pool): such a worker makes
// new failover clients of WorkerConfig.Failover, or polls without it.
const failoverAddr = "FailoverClient"

// cloneFailoverOptions copies opt for a new failover client of the same
// master.
func cloneFailoverOptions(opt *redis.FailoverOptions) *redis.FailoverOptions {
	o := *opt
	o.SentinelAddrs = slices.Clone(opt.SentinelAddrs)
	o.PushNotificationProcessor = nil // the first client's, with its handlers registered
	return &o
}

// cloneClusterOptions copies opt for a second client of the same cluster.
func cloneClusterOptions(opt *redis.ClusterOptions) *redis.ClusterOptions {
	o := *opt
	o.PushNotificationProcessor = nil
	if o.MaintNotificationsConfig != nil {
		m := *o.MaintNotificationsConfig
		o.MaintNotificationsConfig = &m
	}
	return &o
}

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
	w.watching, w.watched = make(chan struct{}), make(chan struct{})
	go w.watchShards()
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
	if w.watching != nil {
		close(w.watching)
		<-w.watched
	}
	var wg sync.WaitGroup
	wg.Go(w.hooks.Shutdown)
	for _, s := range w.extra {
		wg.Go(s.Shutdown)
	}
	w.srv.Shutdown()
	wg.Wait()
	if w.hooked != nil {
		w.hooked.Close()
	}
	if w.idle != nil {
		w.idle.close()
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
