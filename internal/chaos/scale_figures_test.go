//go:build bench

package chaos

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/chaos/invariant"
	"github.com/asyncgate/asyncgate/internal/proctest"
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
	exists    float64   // of them, EXISTS per order (the worker's probes of its queues, and the scripts' own)
	cpu       float64   // CPU ms per order of the asyncgate processes and redis-servers
	redisCPU  float64   // of it, the redis-servers'
	nodes     int
}

// TestScaleFigures (make bench) measures end-to-end orders/s with separate processes,
// in one run: one Redis with 1 and then 2 worker processes, and a 3-master Redis
// Cluster with --queue-shards 1 and 16 (one API, two workers each). End to end is from
// the first placement to the last order's terminal webhook at the receiver; 64 clients
// place the orders as fast as they are answered; the simulator answers at once. Redis
// commands per order are INFO commandstats summed over every node, before and after.
// CPU per order is the user and system time of the API and worker processes and of every
// redis-server (from /proc), steadier than a rate on a shared machine. Every row's orders
// then pass the invariant checker (nothing lost, stuck or doubled).
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
		r.exists /= float64(max(1, len(r.runs)))
		r.cpu /= float64(max(1, len(r.runs)))
		r.redisCPU /= float64(max(1, len(r.runs)))
	}
	ratio := func(a, b *scaleRow) string {
		if b.perSecond == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a.perSecond/b.perSecond)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nScale: end-to-end orders/s (first placement to last terminal webhook), separate processes (1 API, %d orders a run, two runs a row, 64 clients, simulator at 0 ms, relaxed durability, AOF everysec)\n\n", n)
	b.WriteString("| setup | Redis nodes | orders/s (mean; runs) | ratio | CPU ms per order (asyncgate + Redis) | of it Redis | Redis commands per order (scripts' own calls included) | of them script calls | of them EXISTS |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
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
		fmt.Fprintf(&b, "| %s | %d | %.0f (%s) | %s | %.2f | %.2f | %.1f | %.1f | %.1f |\n", r.name, r.nodes, r.perSecond, strings.Join(runs, ", "), rt, r.cpu, r.redisCPU, r.commands, r.scripts, r.exists)
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
	redisPids := make([]int, len(nodes))
	for i, n := range nodes {
		redisPids[i] = redisPid(t, n)
	}
	var appPids []int
	for _, p := range append(append([]*proctest.Proc{}, d.apis...), d.workers...) {
		appPids = append(appPids, p.Pid())
	}
	before := commandStats(t, nodes)
	appCPU0, redisCPU0 := cpuOf(t, appPids), cpuOf(t, redisPids)
	delivered0 := d.recv.got.Load()
	start := time.Now()
	cl := d.placeAll(r.orders, 64)
	d.waitDelivered(int(delivered0)+len(cl.accepted), 5*time.Minute)
	took := time.Since(start)
	appCPU, redisCPU := cpuOf(t, appPids)-appCPU0, cpuOf(t, redisPids)-redisCPU0
	after := commandStats(t, nodes)
	if len(cl.accepted) != r.orders {
		t.Errorf("%d of %d orders accepted (%d refused, %d given up)", len(cl.accepted), r.orders, len(cl.refused), cl.gaveUp)
	}
	perSecond := float64(len(cl.accepted)) / took.Seconds()
	commands := float64(commandsBetween(before, after)) / float64(len(cl.accepted))
	scripts := float64(after["evalsha"]+after["eval"]-before["evalsha"]-before["eval"]) / float64(len(cl.accepted))
	exists := float64(after["exists"]-before["exists"]) / float64(len(cl.accepted))
	t.Logf("%s: the commands per order, most first: %s", r.name, topCommands(before, after, len(cl.accepted), 10))
	r.runs = append(r.runs, perSecond)
	r.commands += commands
	r.scripts += scripts
	r.exists += exists
	r.cpu += float64((appCPU + redisCPU).Milliseconds()) / float64(len(cl.accepted))
	r.redisCPU += float64(redisCPU.Milliseconds()) / float64(len(cl.accepted))
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
	t.Logf("%s: %d orders in %s, %.0f orders/s, CPU %s (Redis %s), %.1f Redis commands per order (%.1f script calls, %.1f EXISTS)", r.name, len(cl.accepted), took.Round(time.Millisecond), perSecond, appCPU+redisCPU, redisCPU, commands, scripts, exists)
}

// topCommands names the n commands called most between before and after, per order.
func topCommands(before, after map[string]int64, orders, n int) string {
	type kv struct {
		name string
		per  float64
	}
	var all []kv
	for name, calls := range after {
		if d := calls - before[name]; d > 0 {
			all = append(all, kv{name, float64(d) / float64(orders)})
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(b.per, a.per) })
	var parts []string
	for _, x := range all[:min(n, len(all))] {
		parts = append(parts, fmt.Sprintf("%s %.1f", x.name, x.per))
	}
	return strings.Join(parts, ", ")
}

// redisPid is the process id of a redis-server, as it says in INFO server.
func redisPid(t *testing.T, s *redistest.Server) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("INFO server on %s: %v", s.Addr(), err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("INFO server on %s has no process_id", s.Addr())
	return 0
}

// cpuOf is the CPU time (user and system) the processes have used so far, from
// /proc/PID/stat (Linux).
func cpuOf(t *testing.T, pids []int) time.Duration {
	t.Helper()
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("CPU of process %d: %v", pid, err)
		}
		// The command name, in parentheses, may hold spaces: the fields after it.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of stat
		stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
		ticks += utime + stime
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times: 100 on Linux.
const clockTicks = 100

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
