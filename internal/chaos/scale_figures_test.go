//go:build bench

package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/chaos/invariant"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// scaleRow is one row of the scale table.
type scaleRow struct {
	name      string
	opts      deploymentOptions
	orders    int
	runs      []float64 // orders/s of each run
	perSecond float64   // their mean
	commands  float64   // Redis commands per order, summed over every node (mean of the runs)
	scripts   float64   // of them, script calls (EVALSHA, EVAL) per order
	nodes     int
}

// TestScaleFigures (make bench) measures end-to-end orders/s with separate processes,
// in one run: one Redis with 1 and then 2 worker processes, and a 3-master Redis
// Cluster with --queue-shards 1 and 16 (one API, two workers each). End to end is from
// the first placement to the last order's terminal webhook at the receiver; 64 clients
// place the orders as fast as they are answered; the simulator answers at once. Redis
// commands per order are INFO commandstats summed over every node, before and after.
// Every row's orders then pass the invariant checker (nothing lost, stuck or doubled).
//
// On a 2-core machine every process shares the two cores, so the absolute gain of a
// second worker or of three masters is capped; what the table shows is whether the
// cluster path costs more per order than one Redis, and whether 16 shards spread
// what one shard serializes on one slot.
func TestScaleFigures(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	relaxed := deploymentOptions{appendFsync: "everysec", relaxed: true, simLatency: "0s", apis: 1, tenants: 4}
	cluster := func(shards string) deploymentOptions {
		o := relaxed
		o.workers = 2
		o.extraArgs = []string{"--queue-shards", shards}
		o.topology = clusterTopology(redistest.ClusterOptions{Masters: 3, AOF: true, Appendfsync: "everysec"})
		return o
	}
	one, two := relaxed, relaxed
	one.workers, two.workers = 1, 2
	rows := []*scaleRow{
		{name: "one Redis, 1 worker process", opts: one},
		{name: "one Redis, 2 worker processes", opts: two},
		{name: "3-master cluster, --queue-shards 1, 2 workers", opts: cluster("1")},
		{name: "3-master cluster, --queue-shards 16, 2 workers", opts: cluster("16")},
	}
	// Two rounds, the second in the reverse order, so that a drift of the shared
	// machine's load weighs on every row alike.
	for round := range 2 {
		for i := range rows {
			r := rows[i]
			if round == 1 {
				r = rows[len(rows)-1-i]
			}
			r.orders = n
			t.Run(r.name, func(t *testing.T) { runScaleRow(t, r) })
		}
	}
	for _, r := range rows {
		var sum float64
		for _, x := range r.runs {
			sum += x
		}
		r.perSecond = sum / float64(max(1, len(r.runs)))
		r.commands /= float64(max(1, len(r.runs)))
		r.scripts /= float64(max(1, len(r.runs)))
	}
	ratio := func(a, b *scaleRow) string {
		if b.perSecond == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a.perSecond/b.perSecond)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nScale: end-to-end orders/s (first placement to last terminal webhook), separate processes (1 API, %d orders a run, two runs a row, 64 clients, simulator at 0 ms, relaxed durability, AOF everysec)\n\n", n)
	b.WriteString("| setup | Redis nodes | orders/s (mean; runs) | ratio | Redis commands per order (scripts' own calls included) | of them script calls |\n| --- | --- | --- | --- | --- | --- |\n")
	base := []*scaleRow{rows[0], rows[0], rows[1], rows[2]}
	for i, r := range rows {
		rt := "1.00× (baseline)"
		if i > 0 {
			rt = ratio(r, base[i]) + " of " + base[i].name
		}
		runs := make([]string, len(r.runs))
		for i, x := range r.runs {
			runs[i] = fmt.Sprintf("%.0f", x)
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f (%s) | %s | %.1f | %.1f |\n", r.name, r.nodes, r.perSecond, strings.Join(runs, ", "), rt, r.commands, r.scripts)
	}
	fmt.Fprintf(&b, "\ncluster, 16 shards vs one Redis with the same 2 workers: %s\n", ratio(rows[3], rows[1]))
	fmt.Print(b.String())
}

func runScaleRow(t *testing.T, r *scaleRow) {
	d := newDeployment(t, r.opts)
	nodes := d.topo.nodes()
	r.nodes = len(nodes)
	// Warm up: a few orders, so that connections, scripts and queues exist.
	warm := d.placeAll(40, 16)
	d.waitDelivered(len(warm.accepted), time.Minute)
	before := commandStats(t, nodes)
	delivered0 := d.recv.got.Load()
	start := time.Now()
	cl := d.placeAll(r.orders, 64)
	d.waitDelivered(int(delivered0)+len(cl.accepted), 5*time.Minute)
	took := time.Since(start)
	after := commandStats(t, nodes)
	if len(cl.accepted) != r.orders {
		t.Errorf("%d of %d orders accepted (%d refused, %d given up)", len(cl.accepted), r.orders, len(cl.refused), cl.gaveUp)
	}
	perSecond := float64(len(cl.accepted)) / took.Seconds()
	commands := float64(commandsBetween(before, after)) / float64(len(cl.accepted))
	scripts := float64(after["evalsha"]+after["eval"]-before["evalsha"]-before["eval"]) / float64(len(cl.accepted))
	r.runs = append(r.runs, perSecond)
	r.commands += commands
	r.scripts += scripts
	subscribed := make(map[string]bool)
	for _, tenant := range d.tenants {
		subscribed[tenant] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := d.checker().Wait(ctx, invariant.Input{Scenario: r.name, Accepted: cl.accepted, Subscribed: subscribed}, 2*time.Minute)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if rep.Violations() > 0 {
		t.Errorf("invariants broken:\n%s", rep)
	}
	t.Logf("%s: %d orders in %s, %.0f orders/s, %.1f Redis commands per order (%.1f script calls)", r.name, len(cl.accepted), took.Round(time.Millisecond), perSecond, commands, scripts)
}

// placeAll places n orders as fast as they are answered, with inflight in flight.
func (d *deployment) placeAll(n, inflight int) *clients {
	cl := &clients{d: d}
	var wg sync.WaitGroup
	sem := make(chan struct{}, inflight)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cl.placeOne(d.tenants[i%len(d.tenants)], i%4, i)
		})
	}
	wg.Wait()
	return cl
}

// waitDelivered waits until the receiver has had n deliveries.
func (d *deployment) waitDelivered(n int, within time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for d.recv.got.Load() < int64(n) {
		if time.Now().After(deadline) {
			d.t.Fatalf("%d of %d webhooks delivered after %s", d.recv.got.Load(), n, within)
		}
		time.Sleep(10 * time.Millisecond) // poll with a deadline: deliveries arrive from other processes
	}
}
