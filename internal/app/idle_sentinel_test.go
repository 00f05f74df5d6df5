package app_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// sentinelSetup starts a master with one replica and three sentinels
// (quorum two) and returns them and go-redis's failover options of the
// master, as --redis-sentinel parses them.
func sentinelSetup(t *testing.T) (master, replica *redistest.Server, sentinels []*redistest.Sentinel, opt *redis.FailoverOptions) {
	t.Helper()
	master = redistest.Start(t, redistest.Options{})
	replica = redistest.StartReplica(t, master, redistest.Options{})
	for range 3 {
		sentinels = append(sentinels, redistest.StartSentinel(t, master, "idle-master", 2))
	}
	url := "redis://" + sentinels[0].Addr() + "/0?master_name=idle-master&addr=" + sentinels[1].Addr() + "&addr=" + sentinels[2].Addr()
	opt, err := app.SentinelOptions(url)
	if err != nil {
		t.Fatal(err)
	}
	return master, replica, sentinels, opt
}

// newFailoverClient is the app's client of opt's master (a copy of opt:
// the client writes to its options).
func newFailoverClient(t *testing.T, opt *redis.FailoverOptions) *redis.Client {
	t.Helper()
	o := *opt
	c := redis.NewFailoverClient(&o)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSentinelIdleRedisCommands is TestIdleRedisCommands on a
// Sentinel-managed master (decision 84): an idle API + worker with the
// default 16 shards makes the master execute at most 50 commands a second
// once the worker has the failover options. The same setup without them
// (the worker polls every queue every 10 ms, as before) is measured first,
// as the baseline of the ratio.
func TestSentinelIdleRedisCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("measures over several seconds")
	}
	master, _, _, opt := sentinelSetup(t)
	direct := master.NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	down := downstream.Config{BaseURL: simSrv.URL}
	measure := func(withOptions bool) float64 {
		cfg := app.Config{Redis: newFailoverClient(t, opt), API: true, Worker: true, Logger: testLogger(t),
			Server:    server.Config{APIKeys: map[string]string{apiKey: "acme"}},
			Portfolio: down, Execution: down}
		if withOptions {
			cfg.WorkerPool.Failover = opt
		}
		a, err := app.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), apptest.ShutdownTimeout)
			defer cancel()
			a.Shutdown(ctx)
		}()
		time.Sleep(2 * time.Second) // let start-up writes (server state, subscriptions) pass
		before, _ := commandCalls(t, direct)
		start := time.Now()
		time.Sleep(5 * time.Second) // the measurement window: nothing happens, which is the point
		after, _ := commandCalls(t, direct)
		return float64(after-before) / time.Since(start).Seconds()
	}
	polling := measure(false)
	waiting := measure(true)
	t.Logf("idle api + worker on a Sentinel-managed master, %d queues: %.1f commands/s without the failover options (polling), %.1f with them (%.0fx fewer)",
		allQueues, polling, waiting, polling/max(waiting, 0.1))
	if waiting > 50 {
		t.Errorf("idle api + worker with the failover options made the master execute %.1f commands/s, want at most 50", waiting)
	}
}

// TestSentinelIdleWorkerWakesAndFollowsFailover: a Sentinel worker given
// the failover options waits for work on the master (a blocking call per
// queue), takes a new order at once though it waits a minute between looks
// (decision 84); after kill -9 of the master and the sentinels' failover
// it takes new orders on the promoted replica, waits there again, and is
// still woken at once by a new order.
func TestSentinelIdleWorkerWakesAndFollowsFailover(t *testing.T) {
	master, replica, sentinels, opt := sentinelSetup(t)
	rdb := newFailoverClient(t, opt)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	cfg.WorkerPool.IdleWait = time.Minute
	cfg.WorkerPool.Failover = opt
	a, url := apptest.Serve(t, cfg)
	b := &bundle{app: a, url: url, rdb: rdb}

	wakes := func(on *redistest.Server, what string) {
		t.Helper()
		direct := redis.NewClient(&redis.Options{Addr: on.Addr()})
		defer direct.Close()
		pollUntil(t, 30*time.Second, what+": worker waiting for work", func() bool { return blockedClients(t, direct) >= allQueues })
		start := time.Now()
		o := b.place(t, order())
		got := b.waitTerminal(t, o.ID, 15*time.Second) // without the wake-up: about a minute
		equal(t, what+": status", got.Status, orders.Executed)
		t.Logf("%s: terminal %s after the 202", what, time.Since(start).Round(time.Millisecond))
	}
	wakes(master, "before the failover")

	master.Kill()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0].Addr()})
	defer sc.Close()
	pollUntil(t, 60*time.Second, "the sentinels promote the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), "idle-master").Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replicaPort(t, replica))
	})
	// The API follows too: a first order after the failover is accepted
	// and ends (the worker's clients may still be reconnecting).
	var id string
	pollUntil(t, 60*time.Second, "an order accepted after the failover", func() bool {
		r := b.do(t, "POST", "/v1/orders", apiKey, order())
		if r.status != http.StatusAccepted {
			return false
		}
		id = r.order(t).ID
		return true
	})
	got := b.waitTerminal(t, id, 60*time.Second)
	equal(t, "first order after the failover", got.Status, orders.Executed)
	wakes(replica, "after the failover")
}

// replicaPort is the port of s.
func replicaPort(t *testing.T, s *redistest.Server) int {
	t.Helper()
	_, p, err := net.SplitHostPort(s.Addr())
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("address %q", s.Addr())
	}
	return n
}
