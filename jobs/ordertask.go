package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/asyncgate/asyncgate/orders"
)

// The API writes an order's process task itself, in the pipeline of the
// order's create script (decision 88): one round trip and one fsync where
// the create script and asynq.Client's enqueue took two. The task is
// written in the Redis layout of Asynq AsynqLayoutVersion, exactly as
// asynq.Client.Enqueue would write it with the options of EnqueueOrder:
//
//	asynq:queues              set   the queue's name (once per process and queue)
//	asynq:{<queue>}:t:<id>    hash  msg (TaskMessage, protobuf), state "pending", pending_since (Unix ns)
//	asynq:{<queue>}:pending   list  <id> pushed on the left
//
// TestOrderTaskAsAsynqWrites proves that Asynq's Inspector and Server see
// such a task as one enqueued by asynq.Client; TestAsynqLayoutVersion fails
// when go.mod moves to another Asynq release, which must be checked against
// this file first.

// AsynqLayoutVersion is the Asynq release whose Redis layout OrderTask
// writes.
const AsynqLayoutVersion = "v0.26.0"

// The keys are those of asynqkeys.go.

// writeTaskScript makes a pending task: the task hash KEYS[1] gets the
// encoded message ARGV[1], state pending and pending_since ARGV[3], and the
// id ARGV[2] goes on the pending list KEYS[2]. A task hash that exists
// (the same task written before) is left alone: 0.
var writeTaskScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'msg', ARGV[1], 'state', 'pending', 'pending_since', ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
`)

// Field numbers of Asynq's TaskMessage (internal/proto/asynq.proto).
const (
	tmType    protowire.Number = 1
	tmPayload protowire.Number = 2
	tmID      protowire.Number = 3
	tmQueue   protowire.Number = 4
	tmRetry   protowire.Number = 5
	tmTimeout protowire.Number = 8
	tmHeaders protowire.Number = 15
	mapKey    protowire.Number = 1
	mapValue  protowire.Number = 2
)

// taskMessage encodes the TaskMessage of a new task with a timeout and no
// deadline (asynq.Client's deadline 0, time.Unix(0, 0)), uniqueness, group
// or retention (proto3: zero fields are left out). Headers go in key order.
func taskMessage(typ string, body []byte, headers map[string]string, id, queue string, retry int, timeout time.Duration) []byte {
	b := make([]byte, 0, 64+len(typ)+len(body)+len(id)+len(queue)+64*len(headers))
	str := func(b []byte, n protowire.Number, v string) []byte {
		if v == "" {
			return b
		}
		b = protowire.AppendTag(b, n, protowire.BytesType)
		return protowire.AppendString(b, v)
	}
	varint := func(b []byte, n protowire.Number, v int64) []byte {
		if v == 0 {
			return b
		}
		b = protowire.AppendTag(b, n, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v))
	}
	b = str(b, tmType, typ)
	if len(body) > 0 {
		b = protowire.AppendTag(b, tmPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, body)
	}
	b = str(b, tmID, id)
	b = str(b, tmQueue, queue)
	b = varint(b, tmRetry, int64(int32(retry)))
	b = varint(b, tmTimeout, int64(timeout.Seconds()))
	for _, k := range slices.Sorted(maps.Keys(headers)) {
		var e []byte
		e = protowire.AppendTag(e, mapKey, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, mapValue, protowire.BytesType)
		e = protowire.AppendString(e, headers[k])
		b = protowire.AppendTag(b, tmHeaders, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// orderTask is an order's process task written in the create's pipeline
// (an orders.Rider).
type orderTask struct {
	e         *Enqueuer
	span      trace.Span
	queue, id string
	keys      []string
	msg       []byte
	sadd      *redis.IntCmd // nil: the queue was known published
	cmd       *redis.Cmd
}

// OrderTask returns the order's process task, as EnqueueOrder would
// enqueue it, to be written in the pipeline of the order's create script
// (orders.Store.CreateRiding); nil when the enqueuer has no
// EnqueuerConfig.Redis (use EnqueueOrder). Its producer span starts now and
// ends when it is settled.
func (e *Enqueuer) OrderTask(ctx context.Context, tenant, id string) orders.Rider {
	if e.insp == nil {
		return nil
	}
	queue := e.Queue(QueueOrders, id)
	ctx, span := startSend(ctx, message{TypeProcessOrder, queue, id, tenant, id})
	body, _ := json.Marshal(payload{tenant, id})
	return &orderTask{
		e: e, span: span, queue: queue, id: id,
		keys: []string{asynqTaskKey(queue, id), pendingKey(queue)},
		msg:  taskMessage(TypeProcessOrder, body, traceHeaders(ctx, nil), id, queue, e.cfg.MaxRetry, e.cfg.TaskTimeout),
	}
}

// Queue adds the task's writes to p.
func (t *orderTask) Queue(ctx context.Context, p redis.Pipeliner, eval bool) {
	t.sadd = nil
	if _, ok := t.e.published.Load(t.queue); !ok {
		t.sadd = p.SAdd(ctx, allQueuesKey, t.queue)
	}
	args := []any{t.msg, t.id, time.Now().UnixNano()}
	if eval {
		t.cmd = writeTaskScript.Eval(ctx, p, t.keys, args...)
	} else {
		t.cmd = writeTaskScript.EvalSha(ctx, p, t.keys, args...)
	}
}

// Settle reads the writes' answers and ends the span. With undo (the
// create stored nothing: a duplicate client_order_id) a task that was
// written is deleted if still pending; one a worker already took finds no
// order and is dropped (Saga.ProcessTask). It returns the write's error,
// or with undo the deletion's; nil when nothing was sent (the create
// failed first).
func (t *orderTask) Settle(ctx context.Context, undo bool) error {
	defer t.span.End()
	if t.cmd == nil {
		return nil
	}
	var err error
	if undo {
		err = t.withdraw()
	} else {
		err = t.result()
	}
	endSpan(t.span, err)
	return err
}

// withdraw deletes the task if it is there and pending.
func (t *orderTask) withdraw() error {
	err := t.e.insp.DeleteTask(t.queue, t.id)
	if err == nil || errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	return fmt.Errorf("withdraw the task of an order not stored: %w", err)
}

func (t *orderTask) result() error {
	if t.sadd != nil {
		if err := t.sadd.Err(); err != nil {
			return fmt.Errorf("enqueue %s: publish queue: %w", TypeProcessOrder, err)
		}
		t.e.published.Store(t.queue, true)
	}
	// 0: the task exists (the pipeline was sent again after a NOSCRIPT);
	// as a task id conflict of EnqueueOrder, no error.
	if err := t.cmd.Err(); err != nil {
		return fmt.Errorf("enqueue %s: %w", TypeProcessOrder, err)
	}
	return nil
}
