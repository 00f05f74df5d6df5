package app_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
)

// clusterCalls sums commandCalls over the cluster's masters.
func clusterCalls(t *testing.T, c *redistest.Cluster) (int64, map[string]int64) {
	t.Helper()
	var n int64
	by := map[string]int64{}
	for _, m := range c.Masters() {
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		k, b := commandCalls(t, rdb)
		rdb.Close()
		n += k
		for name, v := range b {
			by[name] += v
		}
	}
	return n, by
}

// TestShardsOnCluster: with the default 16 shards on a Redis Cluster of
// three masters, the queues of each kind sit on every master (issue 15),
// orders run to their end, and an idle API + worker costs the cluster a
// bounded number of commands a second: the worker's hook gates the
// per-queue scripts there too, learning by a pipeline of one EXISTS per
// queue (decision 73).
func TestShardsOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("measures over several seconds")
	}
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	rdb, err := app.NewClusterRedis(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	for _, kind := range []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks} {
		on := map[string]int{}
		for _, q := range jobs.ShardQueues(kind, jobs.DefaultQueueShards) {
			m, err := c.MasterOf("asynq:{" + q + "}:pending")
			if err != nil {
				t.Fatal(err)
			}
			on[m.Addr()]++
		}
		t.Logf("%s: shards per master %v", kind, on)
		if len(on) != len(c.Masters()) {
			t.Errorf("the %s shards sit on %d masters of %d: %v", kind, len(on), len(c.Masters()), on)
		}
	}

	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	b := &bundle{}
	b.app, b.url = apptest.Serve(t, cfg)
	var ids []string
	for range 48 {
		ids = append(ids, b.place(t, order()).ID)
	}
	for _, id := range ids {
		equal(t, "status", b.waitTerminal(t, id, 30*time.Second).Status, orders.Executed)
	}
	used, err := c.CountKeys(context.Background(), "asynq:{orders*}:*")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("orders queue keys per master after %d orders: %v", len(ids), used)
	for addr, n := range used {
		if n == 0 {
			t.Errorf("master %s holds no orders queue key: %v", addr, used)
		}
	}

	time.Sleep(3 * time.Second) // the worker's last task is over a second ago
	const window = 6 * time.Second
	before, byBefore := clusterCalls(t, c)
	start := time.Now()
	time.Sleep(window) // idle
	after, byAfter := clusterCalls(t, c)
	secs := time.Since(start).Seconds()
	perSec := float64(after-before) / secs
	var parts []string
	for k, v := range byAfter {
		if d := v - byBefore[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(d)/secs))
		}
	}
	slices.Sort(parts)
	t.Logf("idle api + worker on a 3-master cluster, 16 shards: %.1f Redis commands/s (%s)", perSec, strings.Join(parts, ", "))
	// A script per queue (no hook, polling every 10 ms) is thousands a second.
	if perSec > 200 {
		t.Errorf("idle api + worker made the cluster execute %.1f commands/s, want at most 200", perSec)
	}
}
