//go:build bench

package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// targetWebhookP99 is issue 4's target: from an order's terminal status to
// the receiver's 2xx, at steadyRate orders/s.
const targetWebhookP99 = 200 * time.Millisecond

// hookSink is a local receiver that answers 200 to every delivery and
// records, per order, when the first order.executed delivery of the
// measured tenant (path /hooks) arrived and the order's terminal time as
// the body gives it (data.updated_at). Deliveries of the warm-up tenant
// (path /warm) are answered and counted only.
type hookSink struct {
	mu   sync.Mutex
	got  map[string]hookHit
	dups int      // deliveries of an order already received
	bad  []string // bodies that are not an executed order's event
	warm int
}

type hookHit struct{ terminal, at time.Time }

func newHookSink() *hookSink { return &hookSink{got: map[string]hookHit{}} }

func (s *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	w.WriteHeader(http.StatusOK)
	var ev struct {
		Type string
		Data struct {
			ID        string
			Status    string
			UpdatedAt time.Time `json:"updated_at"`
		}
	}
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.URL.Path == "/warm":
		s.warm++
	case err != nil || ev.Type != webhooks.EventOrderExecuted || ev.Data.Status != string(orders.Executed) || ev.Data.ID == "" || ev.Data.UpdatedAt.IsZero():
		if len(s.bad) < 5 {
			s.bad = append(s.bad, fmt.Sprintf("%s (%v)", body, err))
		}
	default:
		if _, ok := s.got[ev.Data.ID]; ok {
			s.dups++
			return
		}
		s.got[ev.Data.ID] = hookHit{terminal: ev.Data.UpdatedAt, at: at}
	}
}

// missing is how many of ids the sink has not received, and a few of them.
func (s *hookSink) missing(ids map[string]time.Time) (n int, sample []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range ids {
		if _, ok := s.got[id]; !ok {
			n++
			if len(sample) < 5 {
				sample = append(sample, id)
			}
		}
	}
	return n, sample
}

// hookFigures is what the webhook scenario measured.
type hookFigures struct {
	row, post Row // deliveries (terminal → 2xx), and the POSTs
	statuses  string
	dups      int
	skew      int // deliveries whose data.updated_at is not the stored one
}

// registerEndpoint subscribes url to order.executed for the tenant of key.
func (e *loadEnv) registerEndpoint(ctx context.Context, api, key, url string) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"url": url, "events": []string{webhooks.EventOrderExecuted}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+"/v1/webhook-endpoints", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("POST /v1/webhook-endpoints: %s: %s", resp.Status, b)
	}
}

// executedOrders is every executed order of the tenant and its terminal
// time, in a few paged reads.
func (e *loadEnv) executedOrders(ctx context.Context, a *app.App, tenant string) map[string]time.Time {
	e.t.Helper()
	out := map[string]time.Time{}
	for after := ""; ; {
		page, next, err := a.Store.List(ctx, tenant, orders.ListParams{Status: orders.Executed, After: after, Limit: 1000})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, o := range page {
			out[o.ID] = o.UpdatedAt
		}
		if next == "" {
			return out
		}
		after = next
	}
}

// waitHooks polls until the sink has a delivery of every order in ids; one
// missing at the deadline fails the test.
func (e *loadEnv) waitHooks(sink *hookSink, ids map[string]time.Time, deadline time.Duration) {
	e.t.Helper()
	end := time.Now().Add(deadline)
	for {
		n, sample := sink.missing(ids)
		if n == 0 {
			return
		}
		if time.Now().After(end) {
			e.t.Errorf("webhook: %d of %d executed orders have no delivery after %v, such as %s",
				n, len(ids), deadline, strings.Join(sample, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// webhookSteady places orders at steadyRate, open loop, with one endpoint
// subscribed to order.executed on a local 200-OK sink, and times each
// executed order from its terminal status (data.updated_at) to the sink's
// receipt of its delivery.
func (e *loadEnv) webhookSteady(ctx context.Context) hookFigures {
	sink := newHookSink()
	srv := httptest.NewServer(sink)
	defer srv.Close()
	a, stop := e.withWorker(ctx, func(c *app.Config) {
		c.Webhooks.Guard = webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true}
	})
	defer stop()
	e.registerEndpoint(ctx, a.URL(), warmKey, srv.URL+"/warm")
	e.registerEndpoint(ctx, a.URL(), apiKey, srv.URL+"/hooks")
	p := poster{c: e.http, url: a.URL() + "/v1/orders"}
	body := func(n int) []byte { return orderBodyFor(0, n) }
	deadline := time.Minute + 10*e.cfg.duration

	var warmLog, log acceptLog
	e.check("webhook warm-up", OpenLoop(ctx, steadyRate, e.cfg.warmup, placer(p, warmKey, &warmLog, body)))
	e.waitIdle(ctx, a.Store, warmTenant)
	e.settle(ctx, a.Store, warmTenant, &warmLog, "")
	warmIDs := e.executedOrders(ctx, a, warmTenant)
	for end := time.Now().Add(deadline); ; time.Sleep(20 * time.Millisecond) {
		sink.mu.Lock()
		n := sink.warm
		sink.mu.Unlock()
		if n >= len(warmIDs) || time.Now().After(end) {
			break
		}
	}

	before := e.usage(ctx)
	post := OpenLoop(ctx, steadyRate, e.cfg.duration, placer(p, apiKey, &log, body))
	e.check("webhook", post)
	e.waitIdle(ctx, a.Store, tenant)
	ids := e.executedOrders(ctx, a, tenant)
	e.waitHooks(sink, ids, deadline)
	cost := e.cost(ctx, "webhook", before, post.Ops)
	s := e.settle(ctx, a.Store, tenant, &log, orders.Executed)

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bad) > 0 {
		e.t.Errorf("webhook: the sink got bodies that are not an executed order's event, such as %v", sink.bad)
	}
	f := hookFigures{statuses: s.statuses(), dups: sink.dups}
	lat := make([]time.Duration, 0, len(sink.got))
	var first, last time.Time
	for id, h := range sink.got {
		stored, ok := ids[id]
		if !ok {
			continue // not an order of this phase
		}
		if !stored.Equal(h.terminal) {
			f.skew++
		}
		lat = append(lat, h.at.Sub(h.terminal))
		if first.IsZero() || h.terminal.Before(first) {
			first = h.terminal
		}
		if h.at.After(last) {
			last = h.at
		}
	}
	if f.skew > 0 {
		e.t.Logf("webhook: %d deliveries carry a data.updated_at other than the stored order's", f.skew)
	}
	f.row = RowOf(fmt.Sprintf("steady %d/s: terminal → webhook 2xx", steadyRate), "deliv/s", "terminal to receiver's 2xx",
		Run{Ops: len(lat), Elapsed: last.Sub(first), Latencies: MergeLatencies(lat)})
	f.row.Cost = cost
	f.post = RowOf(fmt.Sprintf("steady %d/s + webhooks: POST", steadyRate), "orders/s", "request, from when due", post)
	return f
}
