package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/durability"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/server"
)

// BenchmarkAcceptDurability measures the accept path (POST /v1/orders:
// store, enqueue, answer 202; no Idempotency-Key) under each durability
// set-up, in the same run, each on a Redis of its own:
//
//   - relaxed: appendonly yes, appendfsync everysec, no barrier (what
//     --durability relaxed runs on);
//   - strict: appendonly yes, appendfsync always: Redis fsyncs the AOF
//     before each reply, so every write of the accept path waits for the
//     disk (no barrier of ours);
//   - wait: a master (appendfsync everysec) with one replica and
//     --redis-min-replicas 1: one more round trip, SET + WAIT 1.
//
// "serial" places one order each way in turn, one at a time, so that a
// machine whose load drifts weighs on all alike: accepted/s is 1 / the
// mean latency. "parallel" runs 8×GOMAXPROCS goroutines, a third of them
// on each set-up, all at once: accepted/s is each one's orders over the
// run's wall time, with as many requests in flight each (there Redis groups
// the fsyncs, and the WAITs, of concurrent requests). The ratios are
// strict's and wait's accepted/s over relaxed's.
func BenchmarkAcceptDurability(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			setups := []func(){
				durableAcceptBench(b, redistest.Options{AOF: true, Appendfsync: "everysec"}, false),
				durableAcceptBench(b, redistest.Options{AOF: true, Appendfsync: "always"}, false),
				durableAcceptBench(b, redistest.Options{AOF: true, Appendfsync: "everysec"}, true),
			}
			var ns, count [3]atomic.Int64
			var wall time.Duration
			b.ReportAllocs()
			if mode == "serial" {
				for b.Loop() {
					for i, f := range setups {
						t0 := time.Now()
						f()
						ns[i].Add(int64(time.Since(t0)))
						count[i].Add(1)
					}
				}
			} else {
				var next atomic.Int64
				b.SetParallelism(8)
				b.ResetTimer()
				t0 := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1)-1) % len(setups)
					for pb.Next() {
						setups[i]()
						count[i].Add(1)
					}
				})
				wall = time.Since(t0)
			}
			var rate [3]float64
			for i := range setups {
				if mode == "serial" {
					rate[i] = float64(count[i].Load()) / (float64(ns[i].Load()) / 1e9)
				} else {
					rate[i] = float64(count[i].Load()) / wall.Seconds()
				}
			}
			b.ReportMetric(rate[0], "relaxed-accepted/s")
			b.ReportMetric(rate[1], "strict-accepted/s")
			b.ReportMetric(rate[2], "wait-accepted/s")
			b.ReportMetric(rate[1]/rate[0], "strict/relaxed")
			b.ReportMetric(rate[2]/rate[0], "wait/relaxed")
		})
	}
}

// durableAcceptBench serves an API on a Redis of its own started with
// opts (and, with replica, a replica of it and a WAIT 1 barrier), and
// returns a function that places one order and fails b unless it gets a
// 202.
func durableAcceptBench(b *testing.B, opts redistest.Options, replica bool) func() {
	b.Helper()
	srv := redistest.Start(b, opts)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 128})
	b.Cleanup(func() { rdb.Close() })
	log := slog.New(slog.DiscardHandler)
	dc := durability.Config{Logger: log}
	if opts.Appendfsync != "always" {
		dc.Mode = durability.Relaxed
	}
	if replica {
		redistest.StartReplica(b, srv, redistest.Options{})
		dc = durability.Config{MinReplicas: 1, Timeout: durability.MaxTimeout, Logger: log}
	}
	barrier, err := durability.Check(context.Background(), rdb, dc)
	if err != nil {
		b.Fatal(err)
	}
	a, err := app.New(app.Config{Redis: rdb, API: true, Durability: barrier,
		Server: server.Config{APIKeys: apiKeys}, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	post := orderPoster(b, a, keyA, nil)
	return func() {
		if resp := post(); resp != nil && resp.StatusCode != http.StatusAccepted {
			b.Errorf("status %d", resp.StatusCode)
		}
	}
}
