package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Task types and the kinds of queue (each kind is sharded: see
// ShardQueue).
const (
	TypeProcessOrder = "order:process"
	TypeCompensate   = "order:compensate"
	TypeRelease      = "order:release"

	QueueCritical = "critical"
	QueueOrders   = "orders"
	QueueWebhooks = "webhooks"
)

// compensationTaskID is the TaskID of an order's compensation task.
func compensationTaskID(orderID string) string { return "comp:" + orderID }

// releaseTaskID is the TaskID of an ended order's release task.
func releaseTaskID(orderID string) string { return "rel:" + orderID }

type payload struct {
	Tenant string `json:"t"`
	ID     string `json:"id"`
}

func decodePayload(t *asynq.Task) (payload, error) {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Tenant == "" || p.ID == "" {
		return p, fmt.Errorf("decode %s payload: %w", t.Type(), errors.Join(err, asynq.SkipRetry))
	}
	return p, nil
}

// EnqueuerConfig configures an Enqueuer.
type EnqueuerConfig struct {
	// MaxRetry is the retry budget of an order task. Defaults to 10.
	MaxRetry int
	// CompensationMaxRetry is the retry budget of a compensation or release
	// task. With the backoff capped at RetryMax it outlasts long outages.
	// Defaults to 1000.
	CompensationMaxRetry int
	// TaskTimeout bounds one attempt. Defaults to 60s.
	TaskTimeout time.Duration
	// Shards is the number of shards of each kind of queue (--queue-shards).
	// Defaults to DefaultQueueShards.
	Shards int
	// Redis is the Redis of the Asynq client. Set, OrderTask writes an
	// order's process task in the pipeline of the order's create (the
	// order store must be on the same Redis); nil, OrderTask returns nil.
	Redis redis.UniversalClient
}

func (c EnqueuerConfig) withDefaults() EnqueuerConfig {
	if c.MaxRetry == 0 {
		c.MaxRetry = 10
	}
	if c.CompensationMaxRetry == 0 {
		c.CompensationMaxRetry = 1000
	}
	if c.TaskTimeout == 0 {
		c.TaskTimeout = 60 * time.Second
	}
	c.Shards = shardsOrDefault(c.Shards)
	return c
}

// Enqueuer puts order tasks on the queues.
type Enqueuer struct {
	c   *asynq.Client
	cfg EnqueuerConfig
	// With cfg.Redis, for OrderTask: the inspector withdraws a task whose
	// order was not stored; published holds the queues named in
	// asynq:queues by this process, as asynq.Client keeps them.
	insp      *asynq.Inspector
	published sync.Map
}

// NewEnqueuer returns an enqueuer on c.
func NewEnqueuer(c *asynq.Client, cfg EnqueuerConfig) *Enqueuer {
	e := &Enqueuer{c: c, cfg: cfg.withDefaults()}
	if cfg.Redis != nil {
		e.insp = asynq.NewInspectorFromRedisClient(cfg.Redis)
	}
	return e
}

// Shards is the number of shards of each kind of queue the enqueuer uses.
func (e *Enqueuer) Shards() int { return e.cfg.Shards }

// Queue is the queue of kind that the tasks of the order (or of another
// key: see ShardQueue) go to.
func (e *Enqueuer) Queue(kind, key string) string { return QueueFor(kind, key, e.cfg.Shards) }

// EnqueueOrder enqueues the order's process task. A task that already
// exists for the order is not an error: it will run.
func (e *Enqueuer) EnqueueOrder(ctx context.Context, tenant, id string, headers map[string]string) error {
	return e.sendProcess(ctx, tenant, id, id, headers)
}

// sendProcess enqueues a process task of the order under taskID.
func (e *Enqueuer) sendProcess(ctx context.Context, tenant, id, taskID string, headers map[string]string) error {
	b, _ := json.Marshal(payload{tenant, id})
	return send(ctx, e.c, message{TypeProcessOrder, e.Queue(QueueOrders, id), taskID, tenant, id}, b, headers,
		asynq.MaxRetry(e.cfg.MaxRetry), asynq.Timeout(e.cfg.TaskTimeout))
}

// EnqueueCompensation enqueues the order's compensation task.
func (e *Enqueuer) EnqueueCompensation(ctx context.Context, tenant, id string, headers map[string]string) error {
	b, _ := json.Marshal(payload{tenant, id})
	return send(ctx, e.c, message{TypeCompensate, e.Queue(QueueCritical, id), compensationTaskID(id), tenant, id}, b, headers,
		asynq.MaxRetry(e.cfg.CompensationMaxRetry), asynq.Timeout(e.cfg.TaskTimeout))
}

// EnqueueResume enqueues a second task for an order whose own task is held
// by a dead worker (its lease ended at leaseEnd, Unix ms, and its task is
// still active): compensation when compensating, else processing. Its
// TaskID names the expired lease, so that one is made per expiry; the dead
// worker's task, once Asynq's recoverer frees it, finds the order done or
// its lease taken, as any duplicate does.
func (e *Enqueuer) EnqueueResume(ctx context.Context, tenant, id string, compensate bool, leaseEnd int64) error {
	b, _ := json.Marshal(payload{tenant, id})
	suffix := ":resume:" + strconv.FormatInt(leaseEnd, 10)
	if compensate {
		return send(ctx, e.c, message{TypeCompensate, e.Queue(QueueCritical, id), compensationTaskID(id) + suffix, tenant, id}, b, nil,
			asynq.MaxRetry(e.cfg.CompensationMaxRetry), asynq.Timeout(e.cfg.TaskTimeout))
	}
	return e.sendProcess(ctx, tenant, id, id+suffix, nil)
}

// EnqueueResumePending enqueues a second process task for an order that
// is still pending with no lease while its own task is active: the worker
// that dequeued it died (or lost its master) before the lease script ran.
// Its TaskID names the order, so that one is made per order while it
// exists; the first task, once Asynq's recoverer frees it, finds the
// order done or its lease taken, as any duplicate does.
func (e *Enqueuer) EnqueueResumePending(ctx context.Context, tenant, id string) error {
	return e.sendProcess(ctx, tenant, id, id+":resume:pending", nil)
}

func enqueue(ctx context.Context, c *asynq.Client, t *asynq.Task) error {
	_, err := c.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", t.Type(), err)
	}
	return nil
}

// EnqueueRelease enqueues the release of an ended order's funds.
func (e *Enqueuer) EnqueueRelease(ctx context.Context, tenant, id string, headers map[string]string) error {
	b, _ := json.Marshal(payload{tenant, id})
	return send(ctx, e.c, message{TypeRelease, e.Queue(QueueCritical, id), releaseTaskID(id), tenant, id}, b, headers,
		asynq.MaxRetry(e.cfg.CompensationMaxRetry), asynq.Timeout(e.cfg.TaskTimeout))
}
