package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.Shutdown()
	os.Exit(code)
}

const apiKey = "test-key-0123456789abcdef"

type bundle struct {
	app *app.App
	url string
	sim *sim.Sim
	rdb *redis.Client
}

type option func(*app.Config)

func fastConfig(rdb redis.UniversalClient, simURL string) app.Config {
	down := downstream.Config{BaseURL: simURL, Timeout: 500 * time.Millisecond, Budget: 2 * time.Second, BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}
	return app.Config{
		Redis: rdb, API: true, Worker: true,
		Server:     server.Config{APIKeys: map[string]string{apiKey: "acme", "other-key-0123456789abcdef": "globex"}},
		Portfolio:  down,
		Execution:  down,
		Saga:       jobs.SagaConfig{LeaseTTL: 5 * time.Second, RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		Reconciler: jobs.ReconcilerConfig{Interval: time.Hour},
	}
}

// testLogger discards logs unless AG_TEST_LOG=1 (handlers log after tests end).
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("AG_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func setup(t *testing.T, opts ...option) *bundle {
	t.Helper()
	return setupWithSim(t, sim.Config{}, opts...)
}

// setupWithSim is setup with a simulator configured by simCfg.
func setupWithSim(t *testing.T, simCfg sim.Config, opts ...option) *bundle {
	t.Helper()
	rdb := redistest.Shared(t).NewClient(t)
	redistest.CheckSlots(t, rdb) // every script and MULTI in one slot, as on a Redis Cluster
	s := sim.New(simCfg)
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	for _, o := range opts {
		o(&cfg)
	}
	a, url := apptest.Serve(t, cfg)
	return &bundle{app: a, url: url, sim: s, rdb: rdb}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) order(t *testing.T) orders.Order {
	t.Helper()
	var o orders.Order
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("decode order from %s: %v", r.body, err)
	}
	return o
}

func (b *bundle) do(t *testing.T, method, path, key string, body any) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, _ := json.Marshal(v)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, b.url+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, data}
}

func order(mut ...func(map[string]any)) map[string]any {
	o := map[string]any{"account_id": "acc-1", "symbol": "AAPL", "side": "buy", "quantity": 10, "type": "market"}
	for _, f := range mut {
		f(o)
	}
	return o
}

func (b *bundle) place(t *testing.T, body any) orders.Order {
	t.Helper()
	r := b.do(t, "POST", "/v1/orders", apiKey, body)
	if r.status != http.StatusAccepted {
		t.Fatalf("place: %d %s", r.status, r.body)
	}
	o := r.order(t)
	if loc := r.header.Get("Location"); loc != "/v1/orders/"+o.ID {
		t.Fatalf("Location = %q", loc)
	}
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After on 202")
	}
	return o
}

// waitTerminal long-polls the order until it ends or the deadline passes.
func (b *bundle) waitTerminal(t *testing.T, id string, within time.Duration) orders.Order {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := b.do(t, "GET", "/v1/orders/"+id+"?wait=5s", apiKey, nil)
		if r.status != http.StatusOK {
			t.Fatalf("get order: %d %s", r.status, r.body)
		}
		o := r.order(t)
		if o.Status.Terminal() {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s still %s after %s", id, o.Status, within)
		}
	}
}

func (b *bundle) eventTypes(t *testing.T, id string) []string {
	t.Helper()
	r := b.do(t, "GET", "/v1/orders/"+id+"/events", apiKey, nil)
	if r.status != http.StatusOK {
		t.Fatalf("events: %d %s", r.status, r.body)
	}
	var list struct{ Data []orders.Event }
	json.Unmarshal(r.body, &list)
	var out []string
	for _, e := range list.Data {
		out = append(out, string(e.Type))
	}
	return out
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func TestHappyPath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := b.place(t, order())
	equal(t, "status at accept", o.Status, orders.Pending)
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Executed)
	if done.Fill == nil || done.Fill.Quantity != 10 || done.Fill.Price != 100 {
		t.Fatalf("fill = %+v", done.Fill)
	}
	equal(t, "events", b.eventTypes(t, o.ID), []string{"order.created", "order.validated", "order.funds_reserved", "order.executed"})
	equal(t, "executions downstream", b.sim.Executions(o.ID), 1)
	equal(t, "funds still reserved", b.sim.Reserved(o.ID), false)
	equal(t, "reservation settled by the fill", b.sim.Settled(o.ID), true)
}

func TestRejectedInsufficientFunds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sim.SetBalance("poor", 5)
	o := b.place(t, order(func(m map[string]any) { m["account_id"] = "poor" }))
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Rejected)
	equal(t, "reason", done.Reason, jobs.ReasonInsufficientFunds)
	equal(t, "executions", b.sim.Executions(o.ID), 0)
	equal(t, "reserved", b.sim.Reserved(o.ID), false)
	equal(t, "events", b.eventTypes(t, o.ID), []string{"order.created", "order.validated", "order.rejected"})
}

func TestFailedExecutionRefusedIsCompensated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.sim.SetFaults(sim.Execution, sim.Faults{RefuseSymbols: []string{"HALT"}}); err != nil {
		t.Fatal(err)
	}
	o := b.place(t, order(func(m map[string]any) { m["symbol"] = "HALT" }))
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Failed)
	equal(t, "reason", done.Reason, jobs.ReasonExecutionRefused)
	equal(t, "executions", b.sim.Executions(o.ID), 0)
	equal(t, "reservation released", b.sim.Released(o.ID), true)
	equal(t, "events", b.eventTypes(t, o.ID), []string{"order.created", "order.validated", "order.funds_reserved", "order.failed"})
}

func TestCancelBeforeExecution(t *testing.T) {
	t.Parallel()
	// An API-only process accepts the order; nothing runs it yet.
	b := setup(t, func(c *app.Config) { c.Worker = false })
	o := b.place(t, order())
	r := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", apiKey, nil)
	equal(t, "cancel status", r.status, http.StatusAccepted)
	if !r.order(t).CancelRequested {
		t.Fatalf("cancel answer does not show the request: %s", r.body)
	}
	// Now a worker on the same Redis carries it out.
	cfg := fastConfig(b.rdb, "http://127.0.0.1:1") // no downstream is needed to cancel a pending order
	cfg.API, cfg.Logger = false, testLogger(t)
	w, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Cancelled)
	equal(t, "reason", done.Reason, jobs.ReasonCancelled)
	equal(t, "events", b.eventTypes(t, o.ID), []string{"order.created", "order.cancel_requested", "order.cancelled"})
	// Too late now.
	r = b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", apiKey, nil)
	equal(t, "second cancel of a cancelled order", r.status, http.StatusAccepted)
}

func TestCancelAfterExecutionIsTooLate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := b.place(t, order())
	b.waitTerminal(t, o.ID, 20*time.Second)
	r := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", apiKey, nil)
	equal(t, "status", r.status, http.StatusConflict)
	equal(t, "content type", r.header.Get("Content-Type"), "application/problem+json")
}

func TestCancelWithFundsReservedReleasesThem(t *testing.T) {
	t.Parallel()
	// Execution is down, so the order waits in funds_reserved, retrying.
	b := setup(t)
	b.sim.SetFaults(sim.Execution, sim.Faults{Outage: sim.Outage503})
	o := b.place(t, order())
	deadline := time.Now().Add(20 * time.Second)
	for b.sim.Reserved(o.ID) == false {
		if time.Now().After(deadline) {
			t.Fatal("funds never reserved")
		}
		b.do(t, "GET", "/v1/orders/"+o.ID+"?wait=1s", apiKey, nil)
	}
	r := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", apiKey, nil)
	if r.status != http.StatusAccepted && r.status != http.StatusConflict {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	b.sim.ClearFaults()
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	switch done.Status {
	case orders.Cancelled:
		equal(t, "released", b.sim.Released(o.ID), true)
		equal(t, "executions", b.sim.Executions(o.ID), 0)
	case orders.Executed: // the cancel raced execution's point of no return and lost: 409 above
		equal(t, "cancel answer", r.status, http.StatusConflict)
		equal(t, "executions", b.sim.Executions(o.ID), 1)
	default:
		t.Fatalf("status %s", done.Status)
	}
}

func TestTransientFailuresRetryToSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sim.SetFaults(sim.Portfolio, sim.Faults{ErrorRate: 0.5})
	b.sim.SetFaults(sim.Execution, sim.Faults{ErrorRate: 0.5})
	var ids []string
	for range 10 {
		ids = append(ids, b.place(t, order()).ID)
	}
	for _, id := range ids {
		done := b.waitTerminal(t, id, 30*time.Second)
		equal(t, "status of "+id, done.Status, orders.Executed)
		equal(t, "executions of "+id, b.sim.Executions(id), 1)
	}
}

func TestRetriesExhaustedFailsAndReleases(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Enqueuer.MaxRetry = 2 })
	b.sim.SetFaults(sim.Execution, sim.Faults{Outage: sim.Outage503})
	o := b.place(t, order())
	done := b.waitTerminal(t, o.ID, 30*time.Second)
	equal(t, "status", done.Status, orders.Failed)
	if done.Reason != jobs.ReasonRetriesExhausted && done.Reason != jobs.ReasonDownstreamUnavailable {
		t.Fatalf("reason = %q", done.Reason)
	}
	equal(t, "executions", b.sim.Executions(o.ID), 0)
	equal(t, "released", b.sim.Released(o.ID), true)
	// The task sits in the archive (the dead-letter queue).
	insp := b.app.Inspector()
	info, err := insp.GetTaskInfo(b.app.Enq.Queue(jobs.QueueOrders, o.ID), o.ID)
	if err != nil {
		t.Fatalf("archived task: %v", err)
	}
	equal(t, "task state", info.State.String(), "archived")
}

func TestDeadlineFailsOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) {
		c.Server.OrderDeadline = 500 * time.Millisecond
		c.Enqueuer.MaxRetry = 1000
	})
	b.sim.SetFaults(sim.Portfolio, sim.Faults{Outage: sim.OutageReset})
	o := b.place(t, order())
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Failed)
	if done.Reason != jobs.ReasonDownstreamUnavailable && done.Reason != jobs.ReasonDeadlineExceeded {
		t.Fatalf("reason = %q", done.Reason)
	}
	equal(t, "executions", b.sim.Executions(o.ID), 0)
	// The order ended while the portfolio was away: its release is owed and
	// happens once the portfolio is back.
	pending := func() []string {
		ids, err := b.app.Store.PendingReleases(context.Background(), "acme", time.Now().Add(time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	equal(t, "releases owed during the outage", pending(), []string{o.ID})
	b.sim.ClearFaults()
	pollUntil(t, 20*time.Second, "release done after the outage", func() bool { return len(pending()) == 0 })
	equal(t, "reserved after release", b.sim.Reserved(o.ID), false)
}

// pollUntil polls cond until it holds or the deadline passes (for state with no event to wait on).
func pollUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		<-tick.C
	}
}

func TestReconcilerRequeuesLostOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Worker = false })
	// An order stored but never enqueued: the process died in between.
	now := time.Now().Add(-time.Minute)
	lost := &orders.Order{ID: "01890000-0000-7000-8000-000000000001", Tenant: "acme", CreatedAt: now, Deadline: now.Add(time.Hour),
		Request: orders.Request{AccountID: "acc-1", Symbol: "AAPL", Side: orders.Buy, Quantity: 1, Type: orders.Market}}
	if _, err := b.app.Store.Create(context.Background(), lost); err != nil {
		t.Fatal(err)
	}
	simSrv := httptest.NewServer(b.sim)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(b.rdb, simSrv.URL)
	cfg.API, cfg.Logger = false, testLogger(t)
	w, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	st, ran, err := w.Reconciler().RunLocked(context.Background())
	if err != nil || !ran {
		t.Fatalf("reconcile: ran=%v err=%v", ran, err)
	}
	equal(t, "requeued", st.Requeued, 1)
	done := b.waitTerminal(t, lost.ID, 20*time.Second)
	equal(t, "status", done.Status, orders.Executed)
	// A second pass finds nothing to do.
	st, _, _ = w.Reconciler().RunLocked(context.Background())
	equal(t, "requeued on second pass", st.Requeued, 0)
}

func TestBadInputStoresNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	big := `{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":1,"type":"market","metadata":{"k":"` + strings.Repeat("x", 70<<10) + `"}}`
	for _, tt := range []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{"malformed json", apiKey, `{"account_id":`, 400, "malformed_request"},
		{"not an object", apiKey, `[1,2]`, 400, "malformed_request"},
		{"wrong type", apiKey, `{"account_id":"a","symbol":"AAPL","side":"buy","quantity":"ten","type":"market"}`, 422, "validation_failed"},
		{"unknown field", apiKey, order(func(m map[string]any) { m["price"] = 3 }), 422, "validation_failed"},
		{"missing fields", apiKey, `{}`, 422, "validation_failed"},
		{"zero quantity", apiKey, order(func(m map[string]any) { m["quantity"] = 0 }), 422, "validation_failed"},
		{"negative quantity", apiKey, order(func(m map[string]any) { m["quantity"] = -5 }), 422, "validation_failed"},
		{"limit without price", apiKey, order(func(m map[string]any) { m["type"] = "limit" }), 422, "validation_failed"},
		{"empty body", apiKey, ``, 400, "malformed_request"},
		{"trailing data", apiKey, `{"account_id":"a","symbol":"AAPL","side":"buy","quantity":1,"type":"market"} {}`, 400, "malformed_request"},
		{"oversize body", apiKey, big, 413, "body_too_large"},
		{"no key", "", order(), 401, "unauthorized"},
		{"wrong key", "nope-nope-nope-nope", order(), 401, "unauthorized"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "POST", "/v1/orders", tt.key, tt.body)
			equal(t, "status", r.status, tt.status)
			equal(t, "content type", r.header.Get("Content-Type"), "application/problem+json")
			var p struct {
				Type, Code, Detail string
				Status             int
			}
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatalf("problem body %s: %v", r.body, err)
			}
			equal(t, "code", p.Code, tt.code)
			equal(t, "problem status", p.Status, tt.status)
			if p.Detail == "" || !strings.HasSuffix(p.Type, "/"+tt.code) {
				t.Fatalf("problem lacks detail or type: %s", r.body)
			}
		})
	}
	for _, tt := range []struct {
		name, method, path, key string
		status                  int
	}{
		{"unknown order", "GET", "/v1/orders/01890000-0000-7000-8000-00000000dead", apiKey, 404},
		{"not an id", "GET", "/v1/orders/xyz", apiKey, 404},
		{"unknown route", "GET", "/v1/nothing", apiKey, 404},
		{"wrong method", "DELETE", "/v1/orders", apiKey, 405},
		{"bad status filter", "GET", "/v1/orders?status=done", apiKey, 422},
		{"bad wait", "GET", "/v1/orders/01890000-0000-7000-8000-00000000dead?wait=forever", apiKey, 422},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.method, tt.path, tt.key, nil)
			equal(t, "status", r.status, tt.status)
			equal(t, "content type", r.header.Get("Content-Type"), "application/problem+json")
		})
	}
	r := b.do(t, "GET", "/v1/orders", apiKey, nil)
	equal(t, "orders stored after bad input", string(bytes.TrimSpace(r.body)), `{"data":[]}`)
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := b.place(t, order())
	other := "other-key-0123456789abcdef"
	for _, p := range []struct{ method, path string }{
		{"GET", "/v1/orders/" + o.ID}, {"GET", "/v1/orders/" + o.ID + "/events"}, {"POST", "/v1/orders/" + o.ID + "/cancel"},
	} {
		r := b.do(t, p.method, p.path, other, nil)
		equal(t, p.method+" "+p.path+" by another tenant", r.status, http.StatusNotFound)
	}
	r := b.do(t, "GET", "/v1/orders", other, nil)
	equal(t, "other tenant's list", string(bytes.TrimSpace(r.body)), `{"data":[]}`)
}

func TestWaitReturnsOnChange(t *testing.T) {
	t.Parallel()
	// Without a worker the order stays pending; a long poll must return
	// when it changes, not when its 30 s wait ends.
	// A private Redis, so that its command counts are this test's alone.
	prdb := redistest.Start(t, redistest.Options{}).NewClient(t)
	b := setup(t, func(c *app.Config) { c.Worker = false; c.Redis = prdb })
	o := b.place(t, order())
	reads := func() int64 { // HMGET calls: the long poll's read of the order
		info, err := prdb.Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if i := strings.Index(info, "cmdstat_hmget:calls="); i >= 0 {
			fmt.Sscanf(info[i+len("cmdstat_hmget:calls="):], "%d", &n)
		}
		return n
	}
	before := reads()
	res := make(chan response, 1)
	go func() { res <- b.do(t, "GET", "/v1/orders/"+o.ID+"?wait=30s", apiKey, nil) }()
	// Change the order only once the long poll has subscribed and read it.
	for b.app.Store.Waiters() == 0 || reads() == before {
		runtime.Gosched()
	}
	// Move it to validated, as a worker would.
	l, err := b.app.Store.Acquire(context.Background(), "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.app.Store.Transition(context.Background(), l, orders.Change{To: orders.Validated}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		equal(t, "status", r.order(t).Status, orders.Validated)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("long poll returned after %s", d)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("long poll did not return on the change")
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t)
	equal(t, "healthz", b.do(t, "GET", "/healthz", "", nil).status, 200)
	equal(t, "readyz", b.do(t, "GET", "/readyz", "", nil).status, 200)
}
