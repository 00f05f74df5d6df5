package chaos

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// These tests run the API and a worker in the test process (one App), so that they can
// watch the worker's handlers and clients from inside. They share one redis-server, a
// database each.

// inproc is an App with API and worker, the simulator, and the App's logs.
type inproc struct {
	t    *testing.T
	app  *app.App
	sim  *sim.Sim
	logs *proctest.Buffer
	c    *cluster // for place and waitTerminal
}

// startInProcess starts an App on a fresh database. edit changes its Config; wrap, if
// set, wraps the simulator's handler; before runs before the App starts (to register
// handlers on its worker).
func startInProcess(t *testing.T, edit func(*app.Config), wrap func(http.Handler) http.Handler, before func(*app.App)) *inproc {
	t.Helper()
	rdb := redistest.Shared(t).NewClient(t)
	s := sim.New(sim.Config{})
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	simSrv := httptest.NewServer(h)
	t.Cleanup(simSrv.Close)
	logs := &proctest.Buffer{}
	down := downstream.Config{BaseURL: simSrv.URL, Timeout: time.Second, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Breaker: downstream.BreakerConfig{MinRequests: 5, OpenTimeout: time.Second}}
	cfg := app.Config{
		Redis: rdb, API: true, Worker: true,
		Server:     server.Config{APIKeys: map[string]string{apiKey: tenant}},
		Portfolio:  down,
		Execution:  down,
		Saga:       jobs.SagaConfig{RetryBase: 100 * time.Millisecond, RetryMax: time.Second},
		Reconciler: jobs.ReconcilerConfig{Interval: time.Hour},
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(a)
	}
	apiURL := apptest.Start(t, a)
	c := &cluster{t: t, rdb: rdb, sim: s, api: a, apiURL: apiURL,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}}
	return &inproc{t: t, app: a, sim: s, logs: logs, c: c}
}

func (p *inproc) setFaults(svc sim.Service, f sim.Faults) {
	p.t.Helper()
	if err := p.sim.SetFaults(svc, f); err != nil {
		p.t.Fatal(err)
	}
}

// waitLog polls the logs until a record has msg and an err containing errPart.
func (p *inproc) waitLog(msg, errPart string, within time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(p.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
				continue
			}
			if e, _ := rec["err"].(string); strings.Contains(e, errPart) {
				return rec
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no log %q with an err about %q within %s; logs:\n%s", msg, errPart, within, tail(p.logs.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: the worker logs when it gets there
	}
}

// execGauge wraps the simulator to watch the execution calls: how many at once, and how
// long each lasted until the client gave up or got its answer.
type execGauge struct {
	next     http.Handler
	inFlight atomic.Int64
	peak     atomic.Int64

	mu    sync.Mutex
	spans []time.Duration
}

func (g *execGauge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/executions" {
		g.next.ServeHTTP(w, r)
		return
	}
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	start := time.Now()
	g.next.ServeHTTP(w, r)
	g.mu.Lock()
	g.spans = append(g.spans, time.Since(start))
	g.mu.Unlock()
}

// TestSlowDownstream makes every execution call take 5 s. The execution client times
// out after 1 s, its bulkhead lets 3 calls out at once and rejects the others at once, so
// that order tasks give their handler back (postponed) instead of waiting for a slot:
// tasks of the webhooks queue keep being handled promptly by the same worker pool (of
// 10), and the API keeps accepting orders. The breaker is kept out of it (it would stop
// the calls after a few timeouts): the bulkhead alone must protect the worker. With
// attempts waiting for a slot instead, webhook tasks waited about a second. Once the
// latency is gone, every order is executed exactly once.
//
// The webhooks-queue task is a stand-in that records when it ran: it proves that the
// worker's goroutines stay available, whatever the real delivery handler does.
func TestSlowDownstream(t *testing.T) {
	t.Parallel()
	const taskType = "chaos:webhook-stand-in"
	gauge := &execGauge{}
	var (
		mu        sync.Mutex
		latencies []time.Duration
	)
	p := startInProcess(t, func(c *app.Config) {
		c.WorkerPool.Concurrency = 10
		c.Execution.MaxConcurrent = 3
		c.Execution.MaxAttempts = 2
		c.Execution.Budget = 3 * time.Second
		// The bulkhead alone protects the worker here: the breaker would stop the calls.
		c.Execution.Breaker.MinRequests, c.Execution.Breaker.ConsecutiveFailures = 1000, 1000
	}, func(h http.Handler) http.Handler {
		gauge.next = h
		return gauge
	}, func(a *app.App) {
		a.Worker().Mux.HandleFunc(taskType, func(ctx context.Context, t *asynq.Task) error {
			var enqueued time.Time
			if err := enqueued.UnmarshalText(t.Payload()); err != nil {
				return err
			}
			mu.Lock()
			latencies = append(latencies, time.Since(enqueued))
			mu.Unlock()
			return nil
		})
	})
	p.setFaults(sim.Execution, sim.Faults{Latency: 5 * time.Second})

	first := p.c.place(40, 0)
	// While the execution service is slow: webhook-queue tasks and new orders.
	client := asynq.NewClientFromRedisClient(p.c.rdb)
	var accepted *placement
	done := make(chan struct{})
	go func() { defer close(done); accepted = p.c.place(20, 4*time.Second) }()
	time.Sleep(time.Second) // every handler has had its chance to block
	for range 30 {
		now, _ := time.Now().MarshalText()
		if _, err := client.Enqueue(asynq.NewTask(taskType, now), asynq.Queue(jobs.QueueWebhooks)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-done
	time.Sleep(500 * time.Millisecond)

	mu.Lock()
	handled, slowest := len(latencies), time.Duration(0)
	for _, l := range latencies {
		slowest = max(slowest, l)
	}
	mu.Unlock()
	if handled != 30 || slowest > 500*time.Millisecond {
		t.Errorf("webhooks queue: %d of 30 tasks handled, the slowest after %s; want all, within 500ms", handled, slowest)
	}
	if len(accepted.refused) > 0 || accepted.slowest > time.Second {
		t.Errorf("orders during the slowness: %d refused, slowest 202 after %s", len(accepted.refused), accepted.slowest)
	}
	if peak := gauge.peak.Load(); peak > 3 {
		t.Errorf("%d execution calls at once, want at most the bulkhead's 3", peak)
	}
	gauge.mu.Lock()
	for _, d := range gauge.spans {
		if d < 900*time.Millisecond || d > 2*time.Second {
			t.Errorf("an execution call lasted %s, want the 1s timeout", d)
			break
		}
	}
	calls := len(gauge.spans)
	gauge.mu.Unlock()
	st := p.app.Execution.Stats()
	t.Logf("slow execution: %d calls sent (each cut at 1s), %d rejected by the bulkhead, %d by the breaker; "+
		"peak %d at once; webhooks queue: %d tasks, the slowest handled after %s; slowest 202 %s",
		calls, st.BulkheadRejected, st.BreakerRejected, gauge.peak.Load(), handled, slowest.Round(time.Millisecond), accepted.slowest.Round(time.Millisecond))
	if st.BulkheadRejected == 0 {
		t.Error("the bulkhead rejected nothing")
	}

	p.sim.ClearFaults()
	all := append(first.ids, accepted.ids...)
	checkExecutedOnce(t, p.sim, p.c.waitTerminal(all, time.Minute))
}

// TestDeadline keeps a downstream away until the orders' deadline: the orders end failed
// with downstream_unavailable, nothing is executed, and every reservation is released
// (at once when the portfolio service answers, else once it is back).
func TestDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		svc    sim.Service
		faults sim.Faults
	}{
		{"portfolio never answers", sim.Portfolio, sim.Faults{Latency: time.Hour}},
		{"portfolio 503", sim.Portfolio, sim.Faults{Outage: sim.Outage503}},
		{"execution 503", sim.Execution, sim.Faults{Outage: sim.Outage503}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startInProcess(t, func(c *app.Config) {
				c.Server.OrderDeadline = 3 * time.Second
				c.Enqueuer.MaxRetry = 1000
				c.Portfolio.Timeout, c.Portfolio.MaxAttempts = 300*time.Millisecond, 1
			}, nil, nil)
			p.setFaults(tt.svc, tt.faults)
			placed := p.c.place(10, 0)
			done := p.c.waitTerminal(placed.ids, 30*time.Second)
			for id, o := range done {
				if o.Status != orders.Failed || o.Reason != jobs.ReasonDownstreamUnavailable {
					t.Errorf("order %s ended %s (%s), want failed (downstream_unavailable)", id, o.Status, o.Reason)
				}
				if late := o.UpdatedAt.Sub(o.Deadline); late > time.Second {
					t.Errorf("order %s ended %s after its deadline", id, late)
				}
			}
			if got := p.sim.Stats().Executions; got != 0 {
				t.Errorf("%d executions", got)
			}
			// The portfolio back, no funds stay reserved.
			p.sim.ClearFaults()
			deadline := time.Now().Add(30 * time.Second)
			for _, id := range placed.ids {
				for {
					owed, err := p.app.Store.PendingReleases(context.Background(), tenant, time.Now().Add(time.Hour), 100)
					if err != nil {
						t.Fatal(err)
					}
					if !p.sim.Reserved(id) && len(owed) == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("order %s: reserved %v, releases owed %v", id, p.sim.Reserved(id), owed)
					}
					time.Sleep(50 * time.Millisecond) // poll with a deadline: the release task runs apart
				}
			}
			if tt.svc == sim.Execution {
				for _, id := range placed.ids {
					if !p.sim.Released(id) {
						t.Errorf("order %s: reservation not released", id)
					}
				}
			}
		})
	}
}

// TestBadAnswers spoils the answers of both services: the calls fail as transient errors
// with a log line that says what was wrong, nothing panics, and once the answers are good
// again every order is executed exactly once with the right fill (the execution service
// performed the execution whose answer was spoiled; the retry gets the same fill).
func TestBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode sim.GarbageMode
		want string // in the logged error
	}{
		{sim.GarbageInvalidJSON, "bad response: unexpected end of JSON input"},
		{sim.GarbageWrongContentType, `bad response: content type "text/html`},
		{sim.GarbageMissingField, "bad response: missing"},
		{sim.GarbageHuge, "bad response: body exceeds the limit"},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			t.Parallel()
			p := startInProcess(t, func(c *app.Config) {
				c.Portfolio.MaxBodyBytes, c.Execution.MaxBodyBytes = 64<<10, 64<<10
				// Bad answers count against the breakers (downstream tests show it); here
				// they stay closed so that every failure reaches the saga and its log.
				c.Portfolio.Breaker.MinRequests, c.Execution.Breaker.MinRequests = 1000, 1000
				c.Portfolio.Breaker.ConsecutiveFailures, c.Execution.Breaker.ConsecutiveFailures = 1000, 1000
			}, nil, nil)
			const msg = "order step failed; will retry"
			p.setFaults(sim.Portfolio, sim.Faults{Garbage: tt.mode})
			placed := p.c.place(5, 0)
			rec := p.waitLog(msg, "reserve funds: reserve", 10*time.Second)
			if e := rec["err"].(string); !strings.Contains(e, tt.want) {
				t.Errorf("reserve: logged err %q, want one about %q", e, tt.want)
			}
			// The reservations went through; now the executions' answers are spoiled.
			p.setFaults(sim.Execution, sim.Faults{Garbage: tt.mode})
			p.setFaults(sim.Portfolio, sim.Faults{})
			rec = p.waitLog(msg, "execute: execute", 10*time.Second)
			if e := rec["err"].(string); !strings.Contains(e, tt.want) {
				t.Errorf("execute: logged err %q, want one about %q", e, tt.want)
			}
			p.sim.ClearFaults()
			checkExecutedOnce(t, p.sim, p.c.waitTerminal(placed.ids, 30*time.Second))
			if strings.Contains(p.logs.String(), "panic") {
				t.Errorf("a panic was logged:\n%s", tail(p.logs.String(), 3000))
			}
		})
	}
}
