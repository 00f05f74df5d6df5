package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// clusterReceiver records every webhook request, by path.
type clusterReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string][]hit
}

func (r *clusterReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, hs := range r.hits {
		n += len(hs)
	}
	return n
}

// TestClusterEndToEnd runs the API and the worker (in process) on a Redis
// Cluster of three masters through app.NewClusterRedis: 12 tenants, each with
// an API key, a webhook endpoint and a callback secret, place 10 orders each
// (half with an Idempotency-Key, sent twice; a third with a callback URL).
// Every order ends executed, the simulator's ledger shows one execution per
// order, the replayed key answers the same order, every tenant's endpoint gets
// one signed order.executed per order and its callback URL one per callback
// order (verified with the official library and the tenant's secrets), the
// Asynq inspector reads the queues, and the keys are spread over every master
// (logged per master). A CROSSSLOT (or any script touching another slot) fails
// a request, a task or the log check at the end.
func TestClusterEndToEnd(t *testing.T) {
	t.Parallel()
	const (
		tenants   = 12
		perTenant = 10
	)
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	rdb, err := app.NewClusterRedis(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })

	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	rcv := &clusterReceiver{hits: make(map[string][]hit)}
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		rcv.mu.Lock()
		rcv.hits[req.URL.Path] = append(rcv.hits[req.URL.Path], hit{req.URL.Path, req.Header.Clone(), body})
		rcv.mu.Unlock()
	}))
	t.Cleanup(rcv.Close)

	cfg := fastConfig(rdb, simSrv.URL)
	keyOf := make(map[string]string)
	cfg.Server.APIKeys = make(map[string]string)
	var names []string
	for i := range tenants {
		tenant := fmt.Sprintf("t%02d", i)
		names = append(names, tenant)
		keyOf[tenant] = "key-" + tenant + "-0123456789abcdef"
		cfg.Server.APIKeys[keyOf[tenant]] = tenant
	}
	cfg.Reconciler.Interval = time.Second // it lists tenants and reads the queues: on the cluster too
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fastWebhooks(&cfg)
	b := &bundle{sim: s}
	b.app, b.url = apptest.Serve(t, cfg)
	a := b.api(t)

	secrets := make(map[string]webhooks.Secret)
	cbSecrets := make(map[string]webhooks.Secret)
	for _, tenant := range names {
		_, secrets[tenant] = a.createEndpoint(keyOf[tenant], rcv.URL+"/hooks/"+tenant, webhooks.EventTypes...)
		var cb struct{ Secret string }
		a.must(http.StatusOK, "POST", "/v1/callback-secret/rotate", keyOf[tenant], nil, &cb)
		cbSecrets[tenant] = webhooks.MustParseSecret(cb.Secret)
	}
	// post places an order, with an Idempotency-Key when idem is not empty.
	post := func(tenant, idem string, body any) response {
		j, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "/v1/orders", bytes.NewReader(j))
		req.Header.Set("Authorization", "Bearer "+keyOf[tenant])
		req.Header.Set("Content-Type", "application/json")
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		res, err := a.c.Do(req)
		if err != nil {
			t.Errorf("%s: place: %v", tenant, err)
			return response{}
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		return response{res.StatusCode, res.Header, data}
	}

	type placed struct {
		tenant, id string
		callback   bool
	}
	var (
		mu  sync.Mutex
		all []placed
		wg  sync.WaitGroup
	)
	start := time.Now()
	for _, tenant := range names {
		wg.Go(func() {
			for i := range perTenant {
				// Every third order has a callback URL (the tenant's callback
				// secret signs it); every other one an Idempotency-Key (bound in
				// the create script, decision 65), sent twice.
				callback := i%3 == 0
				body := order(func(m map[string]any) {
					m["account_id"] = fmt.Sprintf("acc-%d", i)
					if callback {
						m["callback_url"] = rcv.URL + "/callback/" + tenant
					}
				})
				idem := ""
				if i%2 == 0 {
					idem = fmt.Sprintf("idem-%s-%d", tenant, i)
				}
				r := post(tenant, idem, body)
				if r.status != http.StatusAccepted {
					t.Errorf("%s: place: %d %s", tenant, r.status, r.body)
					return
				}
				o := r.order(t)
				if idem != "" {
					again := post(tenant, idem, body)
					if again.status != http.StatusAccepted || again.order(t).ID != o.ID {
						t.Errorf("%s: the same Idempotency-Key again: %d %s, want 202 with order %s", tenant, again.status, again.body, o.ID)
					}
				}
				mu.Lock()
				all = append(all, placed{tenant, o.ID, callback})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d orders of %d tenants accepted in %s", len(all), tenants, time.Since(start).Round(time.Millisecond))

	// Every order terminal, executed, once.
	for _, p := range all {
		var o orders.Order
		pollUntil(t, 60*time.Second, "order "+p.id+" terminal", func() bool {
			r := a.call("GET", "/v1/orders/"+p.id+"?wait=5s", keyOf[p.tenant], nil)
			if r.status != http.StatusOK {
				t.Fatalf("get order: %d %s", r.status, r.body)
			}
			o = r.order(t)
			return o.Status.Terminal()
		})
		if o.Status != orders.Executed {
			t.Errorf("%s/%s ended %s (%s), want executed", p.tenant, p.id, o.Status, o.Reason)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", "/_sim/orders/"+p.id, nil))
		var l sim.OrderLedger
		json.Unmarshal(rec.Body.Bytes(), &l)
		if rec.Code != http.StatusOK || l.Tenant != p.tenant || l.Executions != 1 || l.Reservations != 1 || l.Settlements != 1 {
			t.Errorf("%s/%s: ledger %d %+v, want one reservation, execution and settlement", p.tenant, p.id, rec.Code, l)
		}
	}
	t.Logf("all terminal after %s", time.Since(start).Round(time.Millisecond))

	// Every tenant's endpoint got one verified order.executed per order.
	callbacks := 0
	for _, p := range all {
		if p.callback {
			callbacks++
		}
	}
	pollUntil(t, 60*time.Second, "every webhook delivered", func() bool { return rcv.count() >= len(all)+callbacks })
	rcv.mu.Lock()
	for _, tenant := range names {
		checkHits(t, tenant, cbSecrets[tenant], rcv.hits["/callback/"+tenant], func(yield func(string) bool) {
			for _, p := range all {
				if p.tenant == tenant && p.callback && !yield(p.id) {
					return
				}
			}
		})
		checkHits(t, tenant, secrets[tenant], rcv.hits["/hooks/"+tenant], func(yield func(string) bool) {
			for _, p := range all {
				if p.tenant == tenant && !yield(p.id) {
					return
				}
			}
		})
	}
	rcv.mu.Unlock()
	t.Logf("%d endpoint deliveries and %d callbacks, all verified", len(all), callbacks)

	// Asynq's inspector (the reconciler's, the dashboard's) reads the queues.
	qs, err := b.app.Inspector().Queues()
	if err != nil || len(qs) == 0 {
		t.Errorf("inspector queues: %v, %v", qs, err)
	}
	for _, q := range qs {
		info, err := b.app.Inspector().GetQueueInfo(q)
		if err != nil {
			t.Errorf("inspector queue %s: %v", q, err)
			continue
		}
		t.Logf("queue %s: %d processed, %d pending, %d retry, %d archived", q, info.Processed, info.Pending, info.Retry, info.Archived)
		if info.Archived != 0 {
			t.Errorf("queue %s has %d archived tasks", q, info.Archived)
		}
	}

	ctx := context.Background()
	per, err := c.KeysPerMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tenantKeys, err := c.CountKeys(ctx, "ag:{*")
	if err != nil {
		t.Fatal(err)
	}
	queueKeys, err := c.CountKeys(ctx, "asynq:{*")
	if err != nil {
		t.Fatal(err)
	}
	tenantsOn := make(map[string][]string)
	for _, tenant := range names {
		m, err := c.MasterOf("ag:{" + tenant + "}:idx")
		if err != nil {
			t.Fatal(err)
		}
		tenantsOn[m.Addr()] = append(tenantsOn[m.Addr()], tenant)
	}
	queuesOn := make(map[string][]string)
	for _, q := range qs {
		m, err := c.MasterOf("asynq:{" + q + "}:pending")
		if err != nil {
			t.Fatal(err)
		}
		queuesOn[m.Addr()] = append(queuesOn[m.Addr()], q)
	}
	var addrs []string
	for addr := range per {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		t.Logf("master %s: %d keys, %d tenant keys (tenants %v), %d queue keys (queues %v)",
			addr, per[addr], tenantKeys[addr], tenantsOn[addr], queueKeys[addr], queuesOn[addr])
		if tenantKeys[addr] == 0 || len(tenantsOn[addr]) == 0 {
			t.Errorf("master %s holds no tenant's keys", addr)
		}
		if (queueKeys[addr] == 0) != (len(queuesOn[addr]) == 0) {
			t.Errorf("master %s holds %d queue keys, but serves the slots of queues %v", addr, queueKeys[addr], queuesOn[addr])
		}
	}
	if len(addrs) != 3 {
		t.Errorf("%d masters hold keys, want 3", len(addrs))
	}
	if errs := grepLines(logs.String(), "level=ERROR"); errs != "" {
		t.Logf("errors logged:\n%s", errs)
	}
	for _, bad := range []string{"CROSSSLOT", "non local key", "MOVED", "hash slot"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("the log mentions %s:\n%s", bad, grepLines(logs.String(), bad))
		}
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// checkHits checks a tenant's deliveries to one URL: each verifies with
// secret (the official library), is an order.executed, and each of the
// orders comes exactly once, no other.
func checkHits(t *testing.T, tenant string, secret webhooks.Secret, hits []hit, want iter.Seq[string]) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret.String())
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]int) // order id → order.executed events
	for _, h := range hits {
		if err := wh.Verify(h.body, h.header); err != nil {
			t.Errorf("%s %s: a delivery fails verification: %v", tenant, h.path, err)
		}
		ev := decodeEvent(t, h)
		if ev.Type != webhooks.EventOrderExecuted {
			t.Errorf("%s %s: event %s of order %s", tenant, h.path, ev.Type, ev.Data.ID)
		}
		got[ev.Data.ID]++
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("%s/%s: %d order.executed deliveries, want 1", tenant, id, got[id])
		}
		delete(got, id)
	}
	if len(got) != 0 {
		t.Errorf("%s: deliveries of orders not its own: %v", tenant, got)
	}
}
