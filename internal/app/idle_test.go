package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// commandCalls is the number of commands rdb's server has executed, from
// INFO commandstats, leaving out the INFO calls that read it, in all and
// by command.
func commandCalls(t *testing.T, rdb *redis.Client) (int64, map[string]int64) {
	t.Helper()
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	by := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":calls=")
		if !ok || name == "cmdstat_info" {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		c, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", sc.Text(), err)
		}
		n += c
		by[strings.TrimPrefix(name, "cmdstat_")] = c
	}
	return n, by
}

// TestIdleRedisCommands counts the commands an idle API + worker with the
// default configuration makes its own redis-server execute (issue 16:
// at most 50 a second; it was about 940 a second per worker with 10 ms
// polls).
func TestIdleRedisCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("measures over several seconds")
	}
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	down := downstream.Config{BaseURL: simSrv.URL}
	cfg := app.Config{Redis: rdb, API: true, Worker: true, Logger: testLogger(t),
		Server:    server.Config{APIKeys: map[string]string{apiKey: "acme"}},
		Portfolio: down, Execution: down}
	apptest.Serve(t, cfg)

	time.Sleep(2 * time.Second) // let start-up writes (server state, subscriptions) pass
	const window = 6 * time.Second
	before, byBefore := commandCalls(t, rdb)
	start := time.Now()
	time.Sleep(window) // the measurement window: nothing happens, which is the point
	after, byAfter := commandCalls(t, rdb)
	secs := time.Since(start).Seconds()
	perSec := float64(after-before) / secs
	var parts []string
	for k, v := range byAfter {
		if d := v - byBefore[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(d)/secs))
		}
	}
	slices.Sort(parts)
	t.Logf("idle api + worker: %.1f Redis commands/s (%s)", perSec, strings.Join(parts, ", "))
	if perSec > 50 {
		t.Errorf("idle api + worker made Redis execute %.1f commands/s, want at most 50", perSec)
	}
}

// blockedClients is the number of clients blocked in a command on rdb's server.
func blockedClients(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	s, err := rdb.Info(context.Background(), "clients").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no blocked_clients in %q", s)
	return 0
}

// allQueues is the number of Asynq queues of a worker with the default shards.
const allQueues = 3 * jobs.DefaultQueueShards

// TestIdleWorkerWakesForNewOrder: an idle worker that waits a minute
// between looks still takes a new order at once, woken by its arrival
// (decision 57); it also stops at once while waiting.
func TestIdleWorkerWakesForNewOrder(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	cfg.WorkerPool.IdleWait = time.Minute
	a, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.Handler())
	stopped := false
	t.Cleanup(func() {
		hs.Close()
		if !stopped {
			a.Shutdown(context.Background())
		}
	})
	b := &bundle{app: a, url: hs.URL, rdb: rdb}

	for i := range 2 {
		// Both Asynq servers wait: one blocking call per queue (3 kinds of
		// DefaultQueueShards each).
		pollUntil(t, 10*time.Second, "worker waiting for work", func() bool { return blockedClients(t, rdb) >= allQueues })
		start := time.Now()
		o := b.place(t, order())
		got := b.waitTerminal(t, o.ID, 15*time.Second) // without the wake-up: about a minute
		equal(t, "status", got.Status, orders.Executed)
		t.Logf("order %d: terminal %s after the 202", i, time.Since(start).Round(time.Millisecond))
	}
	pollUntil(t, 10*time.Second, "worker waiting for work", func() bool { return blockedClients(t, rdb) >= allQueues })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.Shutdown(ctx)
	stopped = true
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("shutdown of a waiting worker took %s", d)
	}
}

// TestIdleWorkerWithPausedQueueDoesNotSpin: a paused queue with tasks in
// it keeps its pending list non-empty, so the wait for work returns at
// once; the worker must not poll it flat out.
func TestIdleWorkerWithPausedQueueDoesNotSpin(t *testing.T) {
	if testing.Short() {
		t.Skip("measures over several seconds")
	}
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	a, url := apptest.Serve(t, cfg)
	b := &bundle{app: a, url: url, rdb: rdb}
	for _, q := range jobs.ShardQueues(jobs.QueueOrders, jobs.DefaultQueueShards) {
		if err := a.Inspector().PauseQueue(q); err != nil {
			t.Fatal(err)
		}
	}
	b.place(t, order())         // stays pending in the paused queue
	time.Sleep(2 * time.Second) // the worker's last task (none) is over a second ago
	before, _ := commandCalls(t, rdb)
	start := time.Now()
	time.Sleep(4 * time.Second) // the measurement window
	after, _ := commandCalls(t, rdb)
	perSec := float64(after-before) / time.Since(start).Seconds()
	t.Logf("idle api + worker with a paused queue holding a task: %.1f Redis commands/s", perSec)
	if perSec > 50 {
		t.Errorf("%.1f Redis commands/s with a paused queue holding a task, want at most 50", perSec)
	}
}
