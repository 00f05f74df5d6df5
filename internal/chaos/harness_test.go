package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// binary is the asyncgate binary the worker processes run.
var binary string

func TestMain(m *testing.M) {
	bin, cleanup, err := proctest.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := m.Run()
	redistest.Shutdown()
	cleanup()
	os.Exit(code)
}

const (
	apiKey = "chaos-key-0123456789abcdef"
	tenant = "acme"
)

// cluster is a private redis-server, the simulator, an in-process API and worker
// processes, as a deployment would run them.
type cluster struct {
	t       *testing.T
	redis   *redistest.Server
	rdb     redis.UniversalClient
	sim     *sim.Sim
	simURL  string
	api     *app.App
	apiURL  string
	http    *http.Client
	workers []*workerProc
}

type clusterOptions struct {
	// workers is the number of `asyncgate worker` processes.
	workers int
	// isolated runs the workers (and the API) with breakers that share nothing.
	isolated bool
	// workerArgs are added to every worker's command line.
	workerArgs []string
	// maxRetry is the retry budget of order tasks. Defaults to 10.
	maxRetry int
}

func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	rs := redistest.Start(t, redistest.Options{})
	rdb, err := app.NewRedis(rs.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)

	a, apiURL := apptest.Serve(t, app.Config{
		Redis: rdb, API: true,
		Server:           server.Config{APIKeys: map[string]string{apiKey: tenant}},
		Enqueuer:         jobs.EnqueuerConfig{MaxRetry: o.maxRetry},
		IsolatedBreakers: o.isolated,
		Logger:           slog.New(slog.DiscardHandler),
	})
	c := &cluster{t: t, redis: rs, rdb: rdb, sim: s, simURL: simSrv.URL, api: a, apiURL: apiURL,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}}
	args := o.workerArgs
	if o.isolated {
		args = append(args, "--shared-breakers=false")
	}
	for range o.workers {
		c.startWorker(args...)
	}
	return c
}

// workerProc is an `asyncgate worker` child process and its output.
type workerProc struct {
	p *proctest.Proc
}

func (c *cluster) startWorker(args ...string) *workerProc {
	c.t.Helper()
	w := &workerProc{p: proctest.Start(c.t, binary, proctest.WorkerArgs(c.redis.URL(0), c.simURL, args...)...)}
	c.workers = append(c.workers, w)
	return w
}

// logLines returns the worker's JSON log records whose msg is msg.
func (w *workerProc) logLines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(w.p.Output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// sawOpen reports how many times the worker logged its portfolio breaker opening: by its
// own trip, and by another process's.
func (w *workerProc) sawOpen() (own, others int) {
	for _, r := range w.logLines("downstream breaker state changed") {
		if r["downstream"] == "portfolio" && r["to"] == "open" {
			own++
		}
	}
	for _, r := range w.logLines("downstream breaker opened by another process") {
		if r["downstream"] == "portfolio" {
			others++
		}
	}
	return own, others
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// placement is what a run of order placements got from the API.
type placement struct {
	ids     []string
	at      map[string]time.Time // when each order was accepted
	refused []string             // answers other than 202
	slowest time.Duration
}

// place posts n orders at an even pace over d (all at once when d is 0), from up to 16
// requests in flight, and returns when all are answered.
func (c *cluster) place(n int, d time.Duration) *placement {
	p := &placement{at: make(map[string]time.Time, n)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range n {
		if d > 0 {
			time.Sleep(time.Until(start.Add(d * time.Duration(i) / time.Duration(n))))
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			id, status, err := c.post()
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			p.slowest = max(p.slowest, took)
			if err != nil || status != http.StatusAccepted {
				p.refused = append(p.refused, fmt.Sprintf("%d %v", status, err))
				return
			}
			p.ids = append(p.ids, id)
			p.at[id] = t0
		})
	}
	wg.Wait()
	return p
}

// post places one order.
func (c *cluster) post() (string, int, error) {
	body := `{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":1,"type":"market"}`
	req, _ := http.NewRequest(http.MethodPost, c.apiURL+"/v1/orders", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close()
	var o orders.Order
	if err := json.NewDecoder(res.Body).Decode(&o); err != nil && res.StatusCode == http.StatusAccepted {
		return "", res.StatusCode, err
	}
	io.Copy(io.Discard, res.Body)
	return o.ID, res.StatusCode, nil
}

// waitTerminal polls the order store until every order has ended, and returns them.
func (c *cluster) waitTerminal(ids []string, within time.Duration) map[string]*orders.Order {
	c.t.Helper()
	return waitTerminal(c.t, c.api.Store, ids, within)
}

func waitTerminal(t *testing.T, store *orders.Store, ids []string, within time.Duration) map[string]*orders.Order {
	t.Helper()
	done := make(map[string]*orders.Order, len(ids))
	deadline := time.Now().Add(within)
	for {
		for _, id := range ids {
			if done[id] != nil {
				continue
			}
			o, err := store.Get(context.Background(), tenant, id)
			if err == nil && o.Status.Terminal() {
				done[id] = o
			}
		}
		if len(done) == len(ids) {
			return done
		}
		if time.Now().After(deadline) {
			for _, id := range ids {
				if done[id] == nil {
					o, err := store.Get(context.Background(), tenant, id)
					t.Fatalf("%d of %d orders still in flight after %s; %s is %+v (%v)", len(ids)-len(done), len(ids), within, id, o, err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond) // poll with a deadline: orders end in other processes
	}
}

// checkExecutedOnce checks that every order ended executed, with the simulator's fill,
// and was executed exactly once downstream.
func checkExecutedOnce(t *testing.T, s *sim.Sim, done map[string]*orders.Order) {
	t.Helper()
	bad := 0
	for id, o := range done {
		switch {
		case o.Status != orders.Executed:
			t.Errorf("order %s ended %s (%s)", id, o.Status, o.Reason)
		case o.Fill == nil || o.Fill.ExecutionID != id || o.Fill.Price != 100 || o.Fill.Quantity != o.Quantity:
			t.Errorf("order %s has a wrong fill %+v", id, o.Fill)
		case s.Executions(id) != 1:
			t.Errorf("order %s executed %d times downstream", id, s.Executions(id))
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatal("too many bad orders")
		}
	}
	if got := s.Stats().Executions; got != len(done) {
		t.Errorf("executions downstream = %d, want %d", got, len(done))
	}
}

// orderQueues lists the shards of the orders queue there are.
func (c *cluster) orderQueues(insp *asynq.Inspector) []string {
	c.t.Helper()
	names, err := insp.Queues()
	if err != nil {
		c.t.Fatalf("queues: %v", err)
	}
	var out []string
	for _, n := range names {
		if kind, _, ok := jobs.ParseShardQueue(n); ok && kind == jobs.QueueOrders {
			out = append(out, n)
		}
	}
	return out
}

// checkNothingArchived checks that no order task sits in the archive (of any shard).
func (c *cluster) checkNothingArchived() {
	c.t.Helper()
	insp := asynq.NewInspectorFromRedisClient(c.rdb)
	for _, q := range c.orderQueues(insp) {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			c.t.Fatalf("queue info: %v", err)
		}
		if info.Archived != 0 {
			c.t.Errorf("%d order tasks archived in %s: a retry budget ran out", info.Archived, q)
		}
	}
}

// retrySet reports the order tasks waiting to run again (in every shard): how many, how
// many of them were postponed (not failed), and the most retries any of them has spent.
func (c *cluster) retrySet() (waiting, postponed, maxRetried int) {
	insp := asynq.NewInspectorFromRedisClient(c.rdb)
	for _, q := range c.orderQueues(insp) {
		for page := 1; ; page++ {
			tasks, err := insp.ListRetryTasks(q, asynq.PageSize(500), asynq.Page(page))
			if err != nil || len(tasks) == 0 {
				break
			}
			for _, ti := range tasks {
				waiting++
				if strings.HasPrefix(ti.LastErr, "postponed") {
					postponed++
				}
				maxRetried = max(maxRetried, ti.Retried)
			}
		}
	}
	return
}

// readyBreakers returns the API's readiness detail of the breakers.
func (c *cluster) readyBreakers() map[string]server.BreakerState {
	res, err := c.http.Get(c.apiURL + "/readyz")
	if err != nil {
		c.t.Fatalf("readyz: %v", err)
	}
	defer res.Body.Close()
	var body struct {
		Breakers map[string]server.BreakerState `json:"breakers"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		c.t.Fatalf("readyz body: %v", err)
	}
	return body.Breakers
}
