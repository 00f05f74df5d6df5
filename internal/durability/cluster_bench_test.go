package durability

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

// BenchmarkClusterBarrier times the barrier under --redis-min-replicas 1 (a
// SET + WAIT 1 pipeline), one Sync at a time, three ways in turn each
// iteration so that load drift weighs on all alike:
//
//   - single: one master with a replica (the plain client's barrier);
//   - one-master: on a cluster of three masters with a replica each, the
//     pipeline on one master only (what a barrier on only the slots a write
//     touched would cost at best);
//   - cluster: the cluster barrier as shipped, on every master in parallel.
//
// The metrics are µs per Sync and cluster's and one-master's over single's.
//
//	go test -run '^$' -bench ClusterBarrier -benchtime 2000x ./internal/durability/
func BenchmarkClusterBarrier(b *testing.B) {
	ctx := context.Background()
	master := redistest.Start(b, redistest.Options{})
	redistest.StartReplica(b, master, redistest.Options{})
	single := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer single.Close()
	c := redistest.StartCluster(b, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	cfg := Config{MinReplicas: 1, Timeout: time.Second}
	sb, err := Check(ctx, single, cfg)
	if err != nil {
		b.Fatal(err)
	}
	cb, err := Check(ctx, cc, cfg)
	if err != nil {
		b.Fatal(err)
	}
	one, err := cc.MasterForKey(ctx, "ag:{acme}:idx")
	if err != nil {
		b.Fatal(err)
	}
	runs := []func() error{
		func() error { return sb.Sync(ctx) },
		func() error { return cb.syncNode(ctx, one) },
		func() error { return cb.Sync(ctx) },
	}
	var ns [3]time.Duration
	for b.Loop() {
		for i, f := range runs {
			t0 := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			ns[i] += time.Since(t0)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(ns[0].Microseconds())/n, "single-µs/sync")
	b.ReportMetric(float64(ns[1].Microseconds())/n, "one-master-µs/sync")
	b.ReportMetric(float64(ns[2].Microseconds())/n, "cluster-µs/sync")
	b.ReportMetric(float64(ns[1])/float64(ns[0]), "one-master/single")
	b.ReportMetric(float64(ns[2])/float64(ns[0]), "cluster/single")
}
