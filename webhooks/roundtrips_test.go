package webhooks_test

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// TestRedisRoundTripsPerDelivery counts the Redis round trips of one
// successful webhook delivery, as the fan-out and the worker make it (a
// go-redis hook on the store's client and on the Asynq servers' own: a
// command, a script or a pipeline is one; the worker's empty dequeues and
// waits for work are left out): the event and its delivery published, the
// delivery task enqueued, dequeued, its attempt begun and recorded, the
// task done. A round of n deliveries to one fast receiver is counted after
// a round that warms up scripts and connections. The worker's periodic
// work of those seconds (heartbeats, the forwarder's looks at the
// scheduled and retry sets), whose share grows with the round's length on
// a slow machine, is logged but not held to the ceilings; a delivery's
// returns to the queue are (each costs its task's dequeue and done), and
// the local slot wait is long enough that none is postponed. Issue 16's
// webhook row compares the deliveries with a raw Asynq task that POSTs
// the same body: three round trips (enqueue, dequeue, done).
func TestRedisRoundTripsPerDelivery(t *testing.T) {
	const n = 100
	// What it is, plus a little headroom: it may go down, not up.
	const (
		maxPublish = 2.05 // the publish script and the task's enqueue
		maxWorker  = 4.1  // dequeue, begin, finish, done
	)
	srv := redistest.Start(t, redistest.Options{})
	// The fan-out's side and the worker's, each on a client of its own.
	pub := srv.NewClient(t)
	same := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: pub.Options().DB})
		t.Cleanup(func() { c.Close() })
		return c
	}
	work := same()
	redistest.CheckSlots(t, pub)
	redistest.CheckSlots(t, work)
	pubCount, workCount := &redistest.RoundTrips{}, &redistest.RoundTrips{}
	pub.AddHook(pubCount)
	work.AddHook(workCount)

	rcv := newReceiver(t)
	quiet := slog.New(slog.DiscardHandler)
	store := webhooks.NewStore(pub, webhooks.StoreConfig{Guard: devGuard()})
	client := asynq.NewClientFromRedisClient(pub)
	notifier := jobs.NewNotifier(nil, store, nil, client, nil, jobs.NotifierConfig{Logger: quiet})

	wstore := webhooks.NewStore(work, webhooks.StoreConfig{Guard: devGuard()})
	d, err := webhooks.NewDeliverer(wstore, webhooks.DelivererConfig{Logger: quiet, SlotLocalWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ostore := orders.NewStore(work, orders.StoreConfig{})
	wnotifier := jobs.NewNotifier(ostore, wstore, d, asynq.NewClientFromRedisClient(work), asynq.NewInspectorFromRedisClient(work), jobs.NotifierConfig{Logger: quiet})
	w := jobs.NewWorker(work, jobs.NewSaga(ostore, nil, nil, nil, jobs.SagaConfig{Logger: quiet}),
		jobs.WorkerConfig{Logger: quiet, Hooks: []redis.Hook{workCount}})
	wnotifier.Register(w)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	b := &testBundle{rdb: pub, store: store, clock: &clock{}}
	const tenant = "rt"
	b.endpoint(t, tenant, rcv.URL+"/hooks")
	insp := asynq.NewInspectorFromRedisClient(same()) // uncounted

	round := func(r int) {
		for range n {
			_, refs := b.publish(t, tenant, "")
			if err := notifier.EnqueueDelivery(context.Background(), one(t, refs)); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for rcv.count.Load() < int64(r*n) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d delivered within 30s", rcv.count.Load(), r*n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// The task's done comes after the receipt: wait until no task is
		// left in the queues.
		for {
			left := 0
			for i := range jobs.DefaultQueueShards {
				if info, err := insp.GetQueueInfo(jobs.ShardQueue(jobs.QueueWebhooks, i)); err == nil {
					left += info.Active + info.Pending + info.Retry + info.Scheduled
				}
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d delivery tasks still queued after 30s", left)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A round first: Redis learns the scripts (EVAL after NOSCRIPT), the
	// pools open their connections, the store reads the subscriptions.
	round(1)
	p0, w0 := pubCount.Snapshot(), workCount.Snapshot()
	round(2)
	p, wk := byKind(pubCount.Snapshot().Since(p0)), byKind(workCount.Snapshot().Since(w0))
	perPub, perWorker := float64(p.All)/n, float64(wk.All)/n
	t.Logf("Redis round trips per delivery: %.2f; fan-out side %.2f (%s); worker %.2f (%s; Asynq's periodic work apart: %d)",
		perPub+perWorker, perPub, p.Breakdown(n), perWorker, wk.Breakdown(n), wk.Periodic)
	if perPub > maxPublish {
		t.Errorf("%.2f round trips per delivery to publish and enqueue, want at most %.2f", perPub, maxPublish)
	}
	if perWorker > maxWorker {
		t.Errorf("%.2f round trips per delivery in the worker, want at most %.1f", perWorker, maxWorker)
	}
}

// byKind sums the counts of the queues' shards and names Asynq's scripts by
// what they do (their first key: a task's hash when enqueuing, the pending
// list when dequeuing, the active list when done).
func byKind(c redistest.RoundTripCount) redistest.RoundTripCount {
	out := redistest.RoundTripCount{All: c.All, Served: c.Served, Periodic: c.Periodic, By: map[string]int64{}}
	shard := regexp.MustCompile(`\{webhooks(\.[0-9]+)?\}`)
	for k, v := range c.By {
		k = shard.ReplaceAllString(k, "{webhooks}")
		switch {
		case strings.HasSuffix(k, "{webhooks}t"):
			k = "asynq enqueue"
		case strings.HasSuffix(k, "{webhooks}pending"):
			k = "asynq dequeue"
		case strings.HasSuffix(k, "{webhooks}active"):
			k = "asynq done"
		}
		out.By[k] += v
	}
	return out
}
