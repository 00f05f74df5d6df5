package jobs

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/asyncgate/asyncgate/internal/oteltest"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// TestAsynqLayoutVersion: OrderTask writes Asynq's Redis layout itself
// (decision 88). Moving go.mod to another Asynq release must come with a
// review of ordertask.go against that release's internal/rdb (enqueueCmd)
// and internal/proto (TaskMessage), then AsynqLayoutVersion raised.
func TestAsynqLayoutVersion(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mod)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "github.com/hibiken/asynq" {
			continue
		}
		if f[1] != AsynqLayoutVersion {
			t.Fatalf("go.mod has Asynq %s, but jobs/ordertask.go writes Asynq %s's task layout: check OrderTask against %s "+
				"(its enqueue script, its TaskMessage fields, its keys; TestOrderTaskAsAsynqWrites), then raise AsynqLayoutVersion",
				f[1], AsynqLayoutVersion, f[1])
		}
		return
	}
	t.Fatal("go.mod does not require github.com/hibiken/asynq")
}

// writeOrderTask writes the order's task as the API does, in a pipeline
// of its own, and settles it.
func writeOrderTask(t *testing.T, ctx context.Context, rdb redis.UniversalClient, e *Enqueuer, tenant, id string, undo bool) error {
	t.Helper()
	task := e.OrderTask(ctx, tenant, id)
	if task == nil {
		t.Fatal("OrderTask is nil with EnqueuerConfig.Redis set")
	}
	for _, eval := range []bool{false, true} {
		p := rdb.Pipeline()
		task.Queue(ctx, p, eval)
		cmds, _ := p.Exec(ctx)
		if !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") }) {
			break
		}
	}
	return task.Settle(ctx, undo)
}

// TestOrderTaskAsAsynqWrites: an order task written by OrderTask is, to
// Asynq's Inspector and to a real Asynq server, what EnqueueOrder's
// asynq.Client writes: same queue, type, payload, headers (the producer
// span's trace context), retry budget, timeout, deadline, retention and
// state, the same hash fields and the queue listed; a server runs it with
// the same task id, retry budget and deadline. A task written again (the
// NOSCRIPT path) is left alone; one whose order was not stored is deleted.
func TestOrderTaskAsAsynqWrites(t *testing.T) {
	exp := oteltest.Install(t)
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	redistest.CheckSlots(t, rdb)
	ctx := context.Background()
	e := NewEnqueuer(asynq.NewClientFromRedisClient(rdb), EnqueuerConfig{MaxRetry: 7, TaskTimeout: 42 * time.Second, Shards: 4, Redis: rdb})
	if NewEnqueuer(nil, EnqueuerConfig{}).OrderTask(ctx, "acme", "x") != nil {
		t.Fatal("OrderTask without EnqueuerConfig.Redis is not nil")
	}

	const byClient, byUs = "0190a000-0000-7000-8000-00000000000a", "0190a000-0000-7000-8000-00000000000b"
	pctx, parent := otel.Tracer("test").Start(ctx, "POST /v1/orders")
	if err := e.EnqueueOrder(pctx, "acme", byClient, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeOrderTask(t, pctx, rdb, e, "acme", byUs, false); err != nil {
		t.Fatal(err)
	}
	parent.End()

	insp := asynq.NewInspectorFromRedisClient(rdb)
	want, err := insp.GetTaskInfo(e.Queue(QueueOrders, byClient), byClient)
	if err != nil {
		t.Fatal(err)
	}
	got, err := insp.GetTaskInfo(e.Queue(QueueOrders, byUs), byUs)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != byUs || got.Queue != e.Queue(QueueOrders, byUs) || got.Type != TypeProcessOrder ||
		string(got.Payload) != `{"t":"acme","id":"`+byUs+`"}` || got.State != asynq.TaskStatePending {
		t.Errorf("task info %+v", got)
	}
	if got.MaxRetry != want.MaxRetry || got.MaxRetry != 7 || got.Timeout != want.Timeout || got.Timeout != 42*time.Second ||
		!got.Deadline.Equal(want.Deadline) || got.Retention != want.Retention || got.Group != want.Group ||
		got.Retried != 0 || got.LastErr != "" || !got.LastFailedAt.Equal(want.LastFailedAt) {
		t.Errorf("task info %+v\nasynq.Client's %+v", got, want)
	}
	if k := slices.Sorted(maps.Keys(got.Headers)); !slices.Equal(k, slices.Sorted(maps.Keys(want.Headers))) || !slices.Contains(k, "traceparent") {
		t.Errorf("headers %v, asynq.Client's %v", got.Headers, want.Headers)
	}
	for _, id := range []string{byClient, byUs} {
		h := rdb.HGetAll(ctx, asynqTaskKey(e.Queue(QueueOrders, id), id)).Val()
		if k := slices.Sorted(maps.Keys(h)); !slices.Equal(k, []string{"msg", "pending_since", "state"}) || h["state"] != "pending" {
			t.Errorf("task %s hash fields %v", id, k)
		}
	}
	queues, err := insp.Queues()
	if err != nil || !slices.Contains(queues, e.Queue(QueueOrders, byUs)) {
		t.Errorf("Asynq's queues %v (%v), want %s among them", queues, err, e.Queue(QueueOrders, byUs))
	}
	var sends int
	for _, s := range exp.GetSpans() {
		if s.Name == "send orders" && s.Parent.SpanID() == parent.SpanContext().SpanID() {
			sends++
		}
	}
	if sends != 2 {
		t.Errorf("%d producer spans under the request, want 2 (EnqueueOrder's and OrderTask's)", sends)
	}

	// Written again: left as it was, no error (EnqueueOrder's id conflict).
	before := rdb.HGet(ctx, asynqTaskKey(e.Queue(QueueOrders, byUs), byUs), "msg").Val()
	if err := writeOrderTask(t, ctx, rdb, e, "acme", byUs, false); err != nil {
		t.Errorf("written again: %v", err)
	}
	if n := rdb.LLen(ctx, pendingKey(e.Queue(QueueOrders, byUs))).Val(); n != 1 {
		t.Errorf("written again: %d on the pending list, want 1", n)
	}
	if rdb.HGet(ctx, asynqTaskKey(e.Queue(QueueOrders, byUs), byUs), "msg").Val() != before {
		t.Error("written again: the message changed")
	}

	// The order was not stored: the task is withdrawn.
	const orphan = "0190a000-0000-7000-8000-00000000000c"
	if err := writeOrderTask(t, ctx, rdb, e, "acme", orphan, true); err != nil {
		t.Errorf("withdraw: %v", err)
	}
	if _, err := insp.GetTaskInfo(e.Queue(QueueOrders, orphan), orphan); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the task of an order not stored: %v, want not found", err)
	}

	// A real server runs both the same way.
	type run struct {
		id, payload string
		maxRetry    int
		deadline    time.Duration
	}
	var mu sync.Mutex
	runs := map[string]run{}
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeProcessOrder, func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mr, _ := asynq.GetMaxRetry(ctx)
		dl, _ := ctx.Deadline()
		mu.Lock()
		runs[id] = run{id, string(task.Payload()), mr, time.Until(dl).Round(10 * time.Second)}
		mu.Unlock()
		return nil
	})
	as := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 2, Queues: map[string]int{e.Queue(QueueOrders, byClient): 1, e.Queue(QueueOrders, byUs): 1},
		LogLevel: asynq.ErrorLevel,
	})
	if err := as.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer as.Shutdown()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(runs)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server ran %d of the 2 tasks", n)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	mu.Lock()
	defer mu.Unlock()
	a, b := runs[byClient], runs[byUs]
	if b.payload != `{"t":"acme","id":"`+byUs+`"}` || b.maxRetry != a.maxRetry || b.maxRetry != 7 || b.deadline != a.deadline || b.deadline != 40*time.Second {
		t.Errorf("the server ran ours as %+v, asynq.Client's as %+v", b, a)
	}
}
