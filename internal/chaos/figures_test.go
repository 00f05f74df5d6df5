//go:build bench

package chaos

import (
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/asyncgate/asyncgate/internal/sim"
)

// TestOutageFigures is the figure of `make bench`: the 20 s portfolio outage in the
// middle of 500 orders over two worker processes, with breakers shared through Redis and
// with breakers that share nothing (the baseline), answering 503 and resetting
// connections; then the throughput of a healthy run with each. It fails only when an
// invariant breaks; the targets (sharing wastes fewer calls, and does not lower the
// healthy throughput by more than the noise, 10%) are marked PASS or MISS, as the load
// test does: the figures depend on the machine.
func TestOutageFigures(t *testing.T) {
	type row struct {
		name string
		res  outageResult
	}
	var rows []row
	wasted := map[sim.OutageMode]*[2]int{}
	for _, mode := range []sim.OutageMode{sim.Outage503, sim.OutageReset} {
		wasted[mode] = &[2]int{}
		for i, isolated := range []bool{false, true} {
			r := outageRun{mode: mode, isolated: isolated, orders: 500,
				lead: 3 * time.Second, outage: 20 * time.Second, tail: 3 * time.Second, openTimeout: 5 * time.Second}
			t.Run(strings.ReplaceAll(r.String(), " ", "_"), func(t *testing.T) {
				res := runOutage(t, r)
				res.log(t)
				rows = append(rows, row{name: r.String(), res: res})
				wasted[mode][i] = res.wasted
			})
		}
	}
	healthy := map[bool]float64{}
	for _, isolated := range []bool{false, true} {
		name := "healthy_shared"
		if isolated {
			name = "healthy_isolated"
		}
		t.Run(name, func(t *testing.T) { healthy[isolated] = runHealthy(t, isolated, 2000) })
	}

	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\twasted calls\torders in outage\tfirst done after recovery\tbacklog\tbacklog drain (orders/s)\tslowest 202\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%d\t%.0f\t%s\t\n", r.name, r.res.wasted, r.res.duringOutage,
			r.res.firstAfter.Round(10*time.Millisecond), r.res.backlog, r.res.drain, r.res.slowest.Round(time.Millisecond))
	}
	w.Flush()
	fmt.Fprintf(&b, "healthy, 2000 orders over two workers: %.0f orders/s with shared breakers, %.0f with isolated ones\n",
		healthy[false], healthy[true])
	mark := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	for _, mode := range []sim.OutageMode{sim.Outage503, sim.OutageReset} {
		w := wasted[mode]
		fmt.Fprintf(&b, "%s  %s outage: shared breakers waste fewer calls than isolated ones (%d < %d)\n", mark(w[0] < w[1]), mode, w[0], w[1])
	}
	fmt.Fprintf(&b, "%s  healthy: sharing costs no throughput (%.0f >= 0.9 × %.0f orders/s)\n",
		mark(healthy[false] >= 0.9*healthy[true]), healthy[false], healthy[true])
	t.Logf("downstream outage figures:\n%s", b.String())
}

// runHealthy places n orders with no worker running, starts two worker processes and
// returns the orders/s from the first completion to the last.
func runHealthy(t *testing.T, isolated bool, n int) float64 {
	t.Helper()
	c := newCluster(t, clusterOptions{isolated: isolated})
	p := c.place(n, 0)
	if len(p.refused) > 0 {
		t.Fatalf("%d orders refused", len(p.refused))
	}
	args := []string{"--downstream-timeout", "1s"}
	if isolated {
		args = append(args, "--shared-breakers=false")
	}
	c.startWorker(args...)
	c.startWorker(args...)
	done := c.waitTerminal(p.ids, 2*time.Minute)
	checkExecutedOnce(t, c.sim, done)
	var first, last time.Time
	for _, o := range done {
		if first.IsZero() || o.UpdatedAt.Before(first) {
			first = o.UpdatedAt
		}
		if o.UpdatedAt.After(last) {
			last = o.UpdatedAt
		}
	}
	rate := float64(n-1) / last.Sub(first).Seconds()
	t.Logf("healthy (isolated %v): %d orders in %s: %.0f orders/s", isolated, n, last.Sub(first).Round(time.Millisecond), rate)
	return rate
}
