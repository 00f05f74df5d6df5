package app_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
)

// pendingByShard is the number of pending tasks of each shard of kind
// (up to max shards), from Asynq's queue figures.
func pendingByShard(t *testing.T, insp *asynq.Inspector, kind string, max int) map[int]int {
	t.Helper()
	out := map[int]int{}
	for i := range max {
		info, err := insp.GetQueueInfo(jobs.ShardQueue(kind, i))
		if err != nil {
			continue // no task ever
		}
		if info.Pending > 0 {
			out[i] = info.Pending
		}
	}
	return out
}

// TestQueueShardsChange: orders accepted under one shard count wait in
// their queues while no worker runs; then the API and the worker run
// with another count (16 → 4, 1 → 16), more orders come, and every order
// ends: the worker drains the shards of the old count too.
func TestQueueShardsChange(t *testing.T) {
	for _, tc := range []struct{ from, to int }{{16, 4}, {1, 16}} {
		t.Run(fmt.Sprintf("%d to %d", tc.from, tc.to), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.NewClient(t)
			simSrv := httptest.NewServer(sim.New(sim.Config{}))
			t.Cleanup(simSrv.Close)

			before := fastConfig(rdb, simSrv.URL)
			before.Worker, before.Logger, before.QueueShards = false, testLogger(t), tc.from
			a1, url1 := apptest.Serve(t, before)
			b1 := &bundle{app: a1, url: url1, rdb: rdb}
			const n = 40
			var ids []string
			for range n {
				ids = append(ids, b1.place(t, order()).ID)
			}
			waiting := pendingByShard(t, a1.Inspector(), jobs.QueueOrders, jobs.MaxQueueShards)
			total, beyond := 0, 0
			for i, c := range waiting {
				total += c
				if i >= tc.to {
					beyond += c
				}
			}
			equal(t, "tasks waiting", total, n)
			if tc.from > tc.to && beyond == 0 {
				t.Fatalf("no task waits in a shard the new count lacks (%v): the test proves nothing", waiting)
			}
			if tc.from == 1 && len(waiting) != 1 {
				t.Fatalf("one shard: tasks waiting in %v", waiting)
			}

			after := fastConfig(rdb, simSrv.URL)
			after.Logger, after.QueueShards = testLogger(t), tc.to
			a2, url2 := apptest.Serve(t, after)
			b2 := &bundle{app: a2, url: url2, rdb: rdb}
			// The worker consumes the new count and every old shard that
			// ever had a task (Asynq lists a queue once a task went to it:
			// 40 orders leave the last of 16 shards empty 8 % of the time).
			seen := 0
			for i := range waiting {
				seen = max(seen, i+1)
			}
			equal(t, "shards the worker consumes", a2.Worker().Shards(), max(seen, tc.to))
			for range n {
				ids = append(ids, b2.place(t, order()).ID)
			}
			for _, id := range ids {
				equal(t, "status of "+id, b2.waitTerminal(t, id, 30*time.Second).Status, orders.Executed)
			}
			if left := pendingByShard(t, a2.Inspector(), jobs.QueueOrders, jobs.MaxQueueShards); len(left) > 0 {
				t.Errorf("tasks still pending: %v", left)
			}
		})
	}
}

// TestReconcilerLooksInOldShards: the reconciler of a process with 4
// shards finds the task of an order accepted under 16 (or 1) in that
// count's shard and enqueues no second one; an order whose task is gone
// it requeues, in its shard of 4.
func TestReconcilerLooksInOldShards(t *testing.T) {
	for _, from := range []int{16, 1} {
		t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.NewClient(t)
			ctx := context.Background()
			store := orders.NewStore(rdb, orders.StoreConfig{})
			insp := asynq.NewInspectorFromRedisClient(rdb)
			old := jobs.NewEnqueuer(asynq.NewClientFromRedisClient(rdb), jobs.EnqueuerConfig{Shards: from})
			now := time.Now().Add(-time.Minute)
			var ids []string
			for i := range 20 {
				o := &orders.Order{ID: fmt.Sprintf("01890000-0000-7000-8000-%012d", i), Tenant: "acme", CreatedAt: now, Deadline: now.Add(time.Hour),
					Request: orders.Request{AccountID: "acc-1", Symbol: "AAPL", Side: orders.Buy, Quantity: 1, Type: orders.Market}}
				if _, err := store.Create(ctx, o); err != nil {
					t.Fatal(err)
				}
				if err := old.EnqueueOrder(ctx, "acme", o.ID, nil); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, o.ID)
			}
			// The task of the first order is lost.
			lost := ids[0]
			if err := insp.DeleteTask(old.Queue(jobs.QueueOrders, lost), lost); err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig(rdb, "http://127.0.0.1:1")
			cfg.API, cfg.Logger, cfg.QueueShards = false, testLogger(t), 4
			a, err := app.New(cfg) // not started: nothing consumes the queues
			if err != nil {
				t.Fatal(err)
			}
			st, err := a.Reconciler().RunOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "requeued", st.Requeued, 1)
			equal(t, "checked", st.Checked, 20)
			if _, err := insp.GetTaskInfo(jobs.QueueFor(jobs.QueueOrders, lost, 4), lost); err != nil {
				t.Errorf("the lost order's task is not in its shard of 4: %v", err)
			}
		})
	}
}

// TestPeriodicJobsWithTwoWorkers: two worker processes reconcile at once
// (their passes hold a Redis lock: one at a time) over orders whose tasks
// were lost; each lost order is requeued once, and every order ends,
// executed once.
func TestPeriodicJobsWithTwoWorkers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	ctx := context.Background()
	store := orders.NewStore(rdb, orders.StoreConfig{})
	now := time.Now().Add(-time.Minute)
	const n = 30
	var ids []string
	for i := range n {
		o := &orders.Order{ID: fmt.Sprintf("01890000-0000-7000-8000-%012d", i), Tenant: "acme", CreatedAt: now, Deadline: now.Add(time.Hour),
			Request: orders.Request{AccountID: "acc-1", Symbol: "AAPL", Side: orders.Buy, Quantity: 1, Type: orders.Market}}
		if _, err := store.Create(ctx, o); err != nil { // stored, never enqueued: the API died in between
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	var workers []*app.App
	for range 2 {
		cfg := fastConfig(rdb, simSrv.URL)
		cfg.API, cfg.Logger = false, testLogger(t)
		w, err := app.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(ctx, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Shutdown(context.Background()) })
		workers = append(workers, w)
	}
	// Both passes at once, several times.
	var mu sync.Mutex
	requeued, ran := 0, 0
	for range 5 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, w := range workers {
			wg.Go(func() {
				<-start
				st, did, err := w.Reconciler().RunLocked(ctx)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				requeued += st.Requeued
				if did {
					ran++
				}
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
	}
	if ran == 0 {
		t.Fatal("no pass ran")
	}
	equal(t, "orders requeued over every pass of both workers", requeued, n)
	for _, id := range ids {
		pollUntil(t, 30*time.Second, "order "+id+" terminal", func() bool {
			o, err := store.Get(ctx, "acme", id)
			return err == nil && o.Status.Terminal()
		})
		o, _ := store.Get(ctx, "acme", id)
		equal(t, "status of "+id, o.Status, orders.Executed)
	}
	equal(t, "executions downstream", s.Stats().Executions, n)
}

// queueTotals sums the figures of every shard of kind there is.
func queueTotals(t *testing.T, insp *asynq.Inspector, kind string) asynq.QueueInfo {
	t.Helper()
	names, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	var sum asynq.QueueInfo
	for _, n := range names {
		if k, _, ok := jobs.ParseShardQueue(n); !ok || k != kind {
			continue
		}
		info, err := insp.GetQueueInfo(n)
		if err != nil {
			t.Fatal(err)
		}
		sum.Size += info.Size
		sum.Pending += info.Pending
		sum.Active += info.Active
		sum.Scheduled += info.Scheduled
		sum.Retry += info.Retry
		sum.Archived += info.Archived
	}
	return sum
}

// TestWorkerTakesUpNewShards: a worker started with 4 shards, before any
// task, takes up the shards of an API rolled out with 16 while it runs.
func TestWorkerTakesUpNewShards(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)

	wcfg := fastConfig(rdb, simSrv.URL)
	wcfg.API, wcfg.Logger, wcfg.QueueShards = false, testLogger(t), 4
	wcfg.WorkerPool.ShardCheckInterval = 100 * time.Millisecond
	w, err := app.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	equal(t, "shards at start", w.Worker().Shards(), 4)

	acfg := fastConfig(rdb, simSrv.URL)
	acfg.Worker, acfg.Logger, acfg.QueueShards = false, testLogger(t), 16
	a, url := apptest.Serve(t, acfg)
	b := &bundle{app: a, url: url, rdb: rdb}
	var ids []string
	beyond := 0
	for range 40 {
		o := b.place(t, order())
		ids = append(ids, o.ID)
		if jobs.ShardOf(o.ID, 16) >= 4 {
			beyond++
		}
	}
	if beyond == 0 {
		t.Fatal("no order in a shard ≥ 4: the test proves nothing")
	}
	for _, id := range ids {
		equal(t, "status of "+id, b.waitTerminal(t, id, 30*time.Second).Status, orders.Executed)
	}
	// The worker consumes what Asynq's queue set shows: 16, or fewer when
	// no task went to the last shards (40 orders miss shard 15 about one
	// time in thirteen).
	seen, err := jobs.SeenShards(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	if seen <= 4 {
		t.Fatalf("Asynq's queue set shows %d shards, want more than 4", seen)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Worker().Shards() != seen && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // poll with a deadline: the worker looks every 100 ms
	}
	equal(t, "shards consumed", w.Worker().Shards(), seen)
}

// listedBeyond is the queues of Asynq's queue set that are shards at or
// beyond n, sorted.
func listedBeyond(t *testing.T, rdb redis.UniversalClient, n int) []string {
	t.Helper()
	names, err := rdb.SMembers(context.Background(), "asynq:queues").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, q := range names {
		if _, i, ok := jobs.ParseShardQueue(q); ok && i >= n {
			out = append(out, q)
		}
	}
	slices.Sort(out)
	return out
}

// TestOldShardsRetire (decision 96): after a change from 16 shards to 4,
// two workers at 4 drain the old shards and take them out of Asynq's
// queue set once empty, but for one holding an archived task; an API
// still at 16 (which listed its shards once, as Asynq does) sends more
// orders to them meanwhile, and every order ends; a worker started then
// consumes only what is still listed.
func TestOldShardsRetire(t *testing.T) {
	t.Run("one Redis", func(t *testing.T) {
		testOldShardsRetire(t, redistest.Start(t, redistest.Options{}).NewClient(t))
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a cluster")
		}
		c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
		rdb, err := app.NewClusterRedis(c.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		testOldShardsRetire(t, rdb)
	})
}

func testOldShardsRetire(t *testing.T, rdb redis.UniversalClient) {
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	ctx := context.Background()

	old := fastConfig(rdb, simSrv.URL)
	old.Worker, old.Logger, old.QueueShards = false, testLogger(t), 16
	a1, url1 := apptest.Serve(t, old)
	b1 := &bundle{app: a1, url: url1}
	var ids []string
	for range 40 {
		ids = append(ids, b1.place(t, order()).ID)
	}
	if len(listedBeyond(t, rdb, 4)) == 0 {
		t.Fatal("no shard beyond 4 listed: the test proves nothing")
	}
	// An archived task in a shard beyond 4 keeps that shard listed.
	const archivedIn = "critical.7"
	info, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:archived", nil),
		asynq.Queue(archivedIn), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.Inspector().ArchiveTask(archivedIn, info.ID); err != nil {
		t.Fatal(err)
	}

	seen, err := jobs.SeenShards(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	now := fastConfig(rdb, simSrv.URL)
	now.Logger, now.QueueShards = testLogger(t), 4
	now.WorkerPool.ShardCheckInterval = 50 * time.Millisecond
	now.WorkerPool.RetireShardsAfter = 200 * time.Millisecond
	a2, url2 := apptest.Serve(t, now)
	b2 := &bundle{app: a2, url: url2}
	second := now
	second.API = false
	w2, err := app.New(second)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Start(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w2.Shutdown(context.Background()) })
	equal(t, "shards the workers consume", a2.Worker().Shards(), seen)

	waitRetired := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			left := listedBeyond(t, rdb, 4)
			if slices.Equal(left, []string{archivedIn}) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: shards beyond 4 still listed: %v, want only %s", what, left, archivedIn)
			}
			time.Sleep(20 * time.Millisecond) // poll with a deadline: the workers look every 50 ms
		}
	}
	for _, id := range ids {
		equal(t, "status of "+id, b2.waitTerminal(t, id, 30*time.Second).Status, orders.Executed)
	}
	waitRetired("after the first orders")

	// The API still at 16 sends orders to retired shards without listing
	// them again; the workers started before still consume them.
	var more []string
	beyond := 0
	for range 40 {
		o := b1.place(t, order())
		more = append(more, o.ID)
		if jobs.ShardOf(o.ID, 16) >= 4 {
			beyond++
		}
	}
	if beyond == 0 {
		t.Fatal("no order in a shard beyond 4: the test proves nothing")
	}
	for range 10 {
		more = append(more, b2.place(t, order()).ID)
	}
	for _, id := range more {
		equal(t, "status of "+id, b2.waitTerminal(t, id, 30*time.Second).Status, orders.Executed)
	}
	waitRetired("after the orders of the API at 16")
	if n, err := rdb.Exists(ctx, "asynq:{"+archivedIn+"}:archived").Result(); err != nil || n != 1 {
		t.Fatalf("the archived task's set: %d, %v", n, err)
	}

	// A worker started now consumes the listed shards: up to the one
	// holding the archived task.
	third := now
	third.API = false
	w3, err := app.New(third)
	if err != nil {
		t.Fatal(err)
	}
	if err := w3.Start(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w3.Shutdown(context.Background()) })
	equal(t, "shards a worker started after consumes", w3.Worker().Shards(), 8)
}
