package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/sim"
)

// outageRun is one outage scenario: orders placed at an even pace over lead+outage+tail
// while the portfolio service is down for outage, from lead on.
type outageRun struct {
	mode        sim.OutageMode
	isolated    bool // breakers that share nothing: the baseline
	orders      int
	lead        time.Duration
	outage      time.Duration
	tail        time.Duration
	openTimeout time.Duration // of the portfolio breaker
}

func (r outageRun) String() string {
	b := "shared"
	if r.isolated {
		b = "isolated"
	}
	return fmt.Sprintf("%s outage %s, %s breakers", r.mode, r.outage, b)
}

// outageResult is what an outage run measured.
type outageResult struct {
	run          outageRun
	wasted       int           // calls that reached the failing portfolio service during the outage
	duringOutage int           // orders accepted during the outage
	waiting      int           // order tasks waiting to run again at the end of the outage
	postponed    int           // of them, postponed rather than failed
	maxRetried   int           // the most retries an order task had spent at the end of the outage
	slowest      time.Duration // the slowest 202
	firstAfter   time.Duration // from the recovery to the first order completed after it
	backlog      int           // orders accepted before the recovery and completed after it
	drain        float64       // orders/s of the backlog, from its first completion to its last
	trips        []string      // per worker: the opens it logged (own trips + others' notices)
}

// runOutage runs r on two worker processes and checks the invariants: every order
// executed exactly once, no retry budget spent on the outage, 202 throughout, the breaker
// open in both workers.
func runOutage(t *testing.T, r outageRun) outageResult {
	t.Helper()
	c := newCluster(t, clusterOptions{
		workers:  2,
		isolated: r.isolated,
		maxRetry: 5, // far fewer than the postponements of an order during the outage
		workerArgs: []string{"--downstream-timeout", "1s",
			"--portfolio-breaker", "open_timeout=" + r.openTimeout.String()},
	})
	res := outageResult{run: r}
	placed := make(chan *placement, 1)
	start := time.Now()
	go func() { placed <- c.place(r.orders, r.lead+r.outage+r.tail) }()

	time.Sleep(time.Until(start.Add(r.lead)))
	faulted := c.sim.Stats().Faulted
	if err := c.sim.SetFaults(sim.Portfolio, sim.Faults{Outage: r.mode}); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(r.outage / 2)
	if !r.isolated {
		// The API process calls no portfolio: its readiness shows the trip recorded in Redis.
		if st := c.readyBreakers()["portfolio"]; st.State == "closed" {
			t.Errorf("readyz during the outage: portfolio breaker %+v", st)
		}
	}
	time.Sleep(time.Until(down.Add(r.outage)))
	res.waiting, res.postponed, res.maxRetried = c.retrySet()
	c.sim.ClearFaults()
	up := time.Now()
	res.wasted = c.sim.Stats().Faulted - faulted

	p := <-placed
	if len(p.refused) > 0 {
		t.Errorf("%d orders not accepted, such as %q: the API must answer 202 throughout", len(p.refused), p.refused[0])
	}
	res.slowest = p.slowest
	done := c.waitTerminal(p.ids, 2*time.Minute)
	checkExecutedOnce(t, c.sim, done)
	c.checkNothingArchived()

	var first, last time.Time
	for id, o := range done {
		at := p.at[id]
		if !at.Before(down) && at.Before(up) {
			res.duringOutage++
		}
		if at.Before(up) && !o.UpdatedAt.Before(up) {
			res.backlog++
			if first.IsZero() || o.UpdatedAt.Before(first) {
				first = o.UpdatedAt
			}
			if o.UpdatedAt.After(last) {
				last = o.UpdatedAt
			}
		}
	}
	if res.backlog > 0 {
		res.firstAfter = first.Sub(up)
		if d := last.Sub(first).Seconds(); d > 0 {
			res.drain = float64(res.backlog-1) / d
		}
	}
	for i, w := range c.workers {
		own, others := w.sawOpen()
		res.trips = append(res.trips, fmt.Sprintf("worker %d: %d own, %d from the other", i+1, own, others))
		if own+others == 0 {
			t.Errorf("worker %d never logged its portfolio breaker opening", i+1)
		}
	}
	return res
}

func (res outageResult) log(t *testing.T) {
	t.Helper()
	r := res.run
	t.Logf("%s, %d orders over %s: %d calls reached the failing portfolio service during the outage "+
		"(%d orders accepted meanwhile; retries would have allowed %d);\n"+
		"at the outage's end %d order tasks waited, %d of them postponed, the most retries spent %d;\n"+
		"breaker opens logged: %v; slowest 202 %s;\n"+
		"after recovery: first completion %s later, backlog of %d drained at %.0f orders/s",
		r, r.orders, r.lead+r.outage+r.tail, res.wasted, res.duringOutage, res.duringOutage*3*6,
		res.waiting, res.postponed, res.maxRetried, res.trips, res.slowest.Round(time.Millisecond),
		res.firstAfter.Round(time.Millisecond), res.backlog, res.drain)
}

// TestOutage takes the portfolio service down in the middle of a run of 500 orders over
// two worker processes, answering 503 and, separately, resetting every connection. The
// outage lasts 8 s with a 2 s open timeout instead of 20 s with 5 s, so that the breaker
// goes through as many open/probe cycles in less time; `make bench` runs the 20 s outage
// and compares with breakers that share nothing.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process outage: about 40 s")
	}
	for _, mode := range []sim.OutageMode{sim.Outage503, sim.OutageReset} {
		t.Run(string(mode), func(t *testing.T) {
			res := runOutage(t, outageRun{mode: mode, orders: 500,
				lead: 2 * time.Second, outage: 8 * time.Second, tail: 2 * time.Second, openTimeout: 2 * time.Second})
			res.log(t)
			// Without breakers every order arriving during the outage would call (MaxAttempts
			// 3) on every retry (5 + 1); the breaker stops nearly all of them.
			if limit := res.duringOutage * 3 * 6 / 20; res.wasted > limit {
				t.Errorf("%d calls reached the failing service, want at most %d", res.wasted, limit)
			}
			if res.maxRetried > 2 {
				t.Errorf("an order task had spent %d retries during the outage: postponements must not count", res.maxRetried)
			}
			if res.postponed == 0 {
				t.Error("no order task was postponed during the outage")
			}
		})
	}
}

// TestFlapping makes both downstreams fail every other second (portfolio answering 503,
// execution resetting connections) while 200 orders run over two worker processes.
func TestFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process flapping: about 15 s")
	}
	c := newCluster(t, clusterOptions{workers: 2, workerArgs: []string{"--downstream-timeout", "1s",
		"--portfolio-breaker", "open_timeout=1s,min_calls=5", "--execution-breaker", "open_timeout=1s,min_calls=5"}})
	placed := make(chan *placement, 1)
	go func() { placed <- c.place(200, 10*time.Second) }()
	for i := range 10 {
		var p, e sim.Faults
		if i%2 == 0 {
			p, e = sim.Faults{Outage: sim.Outage503}, sim.Faults{Outage: sim.OutageReset}
		}
		c.sim.SetFaults(sim.Portfolio, p)
		c.sim.SetFaults(sim.Execution, e)
		time.Sleep(time.Second)
	}
	c.sim.ClearFaults()
	p := <-placed
	if len(p.refused) > 0 {
		t.Errorf("%d orders not accepted, such as %q", len(p.refused), p.refused[0])
	}
	done := c.waitTerminal(p.ids, time.Minute)
	checkExecutedOnce(t, c.sim, done)
	c.checkNothingArchived()
	t.Logf("200 orders executed exactly once; %d downstream calls failed by the flapping", c.sim.Stats().Faulted)
}
