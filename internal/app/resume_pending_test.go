package app_test

import (
	"context"
	"errors"
	"net/http/httptest"
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

// stuckSetup serves an API (no worker) and starts a raw Asynq server with
// one slot on every orders shard whose process handler never returns
// while the test runs: the order it dequeues stays pending with no lease
// while its task is active, as when a worker dies between the dequeue and
// the lease script (or its master does, decision 85). Its heartbeats keep
// Asynq's own lease of the task alive, so Asynq's recoverer never gives
// it back: only the reconciler can. It returns the bundle, the sim, and
// the ids the raw server took, in order.
func stuckSetup(t *testing.T) (*bundle, *sim.Sim, <-chan string) {
	t.Helper()
	srv := redistest.Shared(t)
	rdb := srv.NewClient(t)
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	cfg.Worker = false
	a, url := apptest.Serve(t, cfg)

	got := make(chan string, 16)
	release := make(chan struct{})
	queues := map[string]int{}
	for _, q := range jobs.ShardQueues(jobs.QueueOrders, jobs.DefaultQueueShards) {
		queues[q] = 1
	}
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: rdb.Options().DB})
	dead := asynq.NewServerFromRedisClient(raw, asynq.Config{Concurrency: 1, Queues: queues,
		TaskCheckInterval: 10 * time.Millisecond, ShutdownTimeout: time.Second, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc(jobs.TypeProcessOrder, func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		got <- id
		<-release // the dead worker: it never runs the saga
		return errors.New("released at the end of the test")
	})
	if err := dead.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(release)
		dead.Shutdown()
		raw.Close()
	})
	return &bundle{app: a, url: url, sim: s, rdb: rdb}, s, got
}

// takenBy waits until the raw server took the order's task.
func takenBy(t *testing.T, got <-chan string, id string) {
	t.Helper()
	select {
	case g := <-got:
		if g != id {
			t.Fatalf("the raw server took %s, want %s", g, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the raw server did not take order %s within 10s", id)
	}
}

// TestReconcilerResumesOrderNeverLeased (decision 85): an order whose
// process task a worker took and never ran the lease script for (it died,
// or its master did) ends within ResumeAfter and a lease check, not when
// Asynq gives the task back (60–120 s; here never, as the holder's
// heartbeats go on). It executes once.
func TestReconcilerResumesOrderNeverLeased(t *testing.T) {
	t.Parallel()
	const resumeAfter, slack = 4 * time.Second, 6 * time.Second
	b, s, got := stuckSetup(t)
	placed := time.Now()
	o := b.place(t, order())
	takenBy(t, got, o.ID)

	// A worker process (with its reconciler) comes up after the task was taken.
	apptest.Serve(t, workerOnly(t, b, s, resumeAfter))

	final := b.waitTerminal(t, o.ID, resumeAfter+30*time.Second)
	took := time.Since(placed)
	equal(t, "status", final.Status, orders.Executed)
	equal(t, "executions", s.Executions(o.ID), 1)
	t.Logf("order whose task a dead worker holds, never leased: terminal %s after its 202 (resume after %s)", took.Round(10*time.Millisecond), resumeAfter)
	if took > resumeAfter+slack {
		t.Errorf("terminal %s after the 202, want at most %s + %s", took.Round(10*time.Millisecond), resumeAfter, slack)
	}
}

// workerOnly is the configuration of a worker-only app on b's Redis and
// s's downstream, resuming after resumeAfter.
func workerOnly(t *testing.T, b *bundle, s *sim.Sim, resumeAfter time.Duration) app.Config {
	t.Helper()
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(b.rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	cfg.API = false
	cfg.ResumeAfter = resumeAfter
	cfg.Saga.LeaseTTL = 0 // two thirds of resumeAfter
	return cfg
}

// TestReconcilerLeavesQueuedOrders (decision 85): the check resumes only
// an order whose task is active; a pending order whose task waits in its
// queue (a backlog) gets no second task, and neither does an active one
// younger than ResumeAfter. One resume task per order, however many
// passes.
func TestReconcilerLeavesQueuedOrders(t *testing.T) {
	t.Parallel()
	b, _, got := stuckSetup(t)
	stuck := b.place(t, order())
	takenBy(t, got, stuck.ID)
	queued := b.place(t, order()) // the raw server's one slot is taken: it stays in its queue
	insp := b.app.Inspector()
	t.Cleanup(func() { insp.Close() })
	pollUntil(t, 5*time.Second, "queued order's task pending", func() bool {
		info, err := insp.GetTaskInfo(b.app.Enq.Queue(jobs.QueueOrders, queued.ID), queued.ID)
		return err == nil && info.State == asynq.TaskStatePending
	})

	young := jobs.NewReconciler(b.app.Store, insp, b.app.Enq, jobs.ReconcilerConfig{ResumeAfter: time.Minute})
	n, err := young.ResumeStale(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "resumed before ResumeAfter", n, 0)

	later := jobs.NewReconciler(b.app.Store, insp, b.app.Enq, jobs.ReconcilerConfig{ResumeAfter: time.Minute,
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	for range 3 {
		n, err := later.ResumeStale(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "resumed after ResumeAfter", n, 1)
	}
	resumeOf := func(id string) (*asynq.TaskInfo, error) {
		return insp.GetTaskInfo(b.app.Enq.Queue(jobs.QueueOrders, id), id+":resume:pending")
	}
	if info, err := resumeOf(stuck.ID); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("resume task of the stuck order: %+v, %v; want one, pending", info, err)
	}
	if _, err := resumeOf(queued.ID); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("resume task of the queued order: %v, want none", err)
	}
	q := b.app.Enq.Queue(jobs.QueueOrders, stuck.ID)
	pending, err := insp.ListPendingTasks(q)
	if err != nil {
		t.Fatal(err)
	}
	resumes := 0
	for _, p := range pending {
		if p.ID == stuck.ID+":resume:pending" {
			resumes++
		}
	}
	equal(t, "resume tasks of the stuck order in its queue", resumes, 1)
}
