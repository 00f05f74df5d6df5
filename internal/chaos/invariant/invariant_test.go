package invariant

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakes: orders by id, ledger entries by id, deliveries.
type fakeAPI struct {
	mu     sync.Mutex
	orders map[string]*Order // nil entry: 404
	reads  int
}

func (f *fakeAPI) Order(_ context.Context, _, id string) (*Order, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	o := f.orders[id]
	if o == nil {
		return nil, ErrNotFound
	}
	c := *o
	return &c, nil
}

type fakeLedger map[string]*LedgerEntry

func (f fakeLedger) Order(_ context.Context, id string) (*LedgerEntry, error) {
	if e := f[id]; e != nil {
		return e, nil
	}
	return nil, ErrNotFound
}

type fakeReceiver []Delivery

func (f fakeReceiver) Deliveries() ([]Delivery, error) { return f, nil }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// healthy is one order of tenant a, executed once, its webhook delivered once.
func healthy() (*fakeAPI, fakeLedger, fakeReceiver, Input) {
	api := &fakeAPI{orders: map[string]*Order{"o1": {Status: "executed", UpdatedAt: t0.Add(3 * time.Second)}}}
	ledger := fakeLedger{"o1": {Executions: 1, ReservationOpen: true}}
	rcv := fakeReceiver{{Tenant: "a", WebhookID: "w1", Type: "order.executed", OrderID: "o1", SignatureValid: true, At: t0.Add(4 * time.Second)}}
	in := Input{Scenario: "s", Accepted: []Accepted{{Tenant: "a", Key: "k1", OrderID: "o1", At: t0}},
		Subscribed: map[string]bool{"a": true}, LastFault: t0.Add(time.Second)}
	return api, ledger, rcv, in
}

func check(t *testing.T, api *fakeAPI, l fakeLedger, r fakeReceiver, in Input) *Report {
	t.Helper()
	c := &Checker{API: api, Ledger: l, Receiver: r}
	rep, err := c.Check(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestCheckHealthy(t *testing.T) {
	api, l, r, in := healthy()
	in.Accepted = append(in.Accepted, in.Accepted[0]) // a replayed 202 is the same order
	rep := check(t, api, l, r, in)
	if rep.Violations() != 0 || rep.Accepted != 1 || rep.DuplicateWebhooks != 0 {
		t.Fatalf("a healthy run reported %+v", rep)
	}
	if rep.Finish != 3*time.Second {
		t.Errorf("finish = %s, want 3s (the webhook, 3 s after the last fault)", rep.Finish)
	}
	if !rep.settled() {
		t.Error("a healthy run is not settled")
	}
}

// TestCheckReportsEachViolation feeds the checker one violation of each kind and checks
// that it counts exactly that one.
func TestCheckReportsEachViolation(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(*fakeAPI, fakeLedger, *fakeReceiver, *Input)
		want  func(*Report) int
	}{
		{"lost", func(a *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			delete(a.orders, "o1")
			*r = nil
		}, func(r *Report) int { return r.Lost }},
		{"lost after execution", func(a *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			delete(a.orders, "o1")
			*r = nil
		}, func(r *Report) int { return r.LostExecuted + r.Lost - 1 }},
		{"stuck", func(a *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			a.orders["o1"].Status = "funds_reserved"
			*r = nil
		}, func(r *Report) int { return r.Stuck }},
		{"executed twice", func(_ *fakeAPI, l fakeLedger, _ *fakeReceiver, _ *Input) {
			l["o1"].Executions = 2
		}, func(r *Report) int { return r.ExecutedTwice }},
		{"one intent filled under two order ids", func(a *fakeAPI, l fakeLedger, r *fakeReceiver, in *Input) {
			a.orders["o2"] = &Order{Status: "executed", UpdatedAt: t0}
			l["o2"] = &LedgerEntry{Executions: 1, ReservationOpen: true}
			*r = append(*r, Delivery{Tenant: "a", WebhookID: "w2", Type: "order.executed", OrderID: "o2", SignatureValid: true})
			in.Accepted = append(in.Accepted, Accepted{Tenant: "a", Key: "k1", OrderID: "o2"})
		}, func(r *Report) int { return r.ExecutedTwice }},
		{"executed without a fill", func(_ *fakeAPI, l fakeLedger, _ *fakeReceiver, _ *Input) {
			l["o1"].Executions = 0
			l["o1"].ReservationOpen = false
		}, func(r *Report) int { return r.OutcomeDisagrees }},
		{"failed after a fill", func(a *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			a.orders["o1"].Status = "failed"
			(*r)[0].Type = "order.failed"
		}, func(r *Report) int { return r.OutcomeDisagrees + r.ReservationsLeaked - 1 }},
		{"reservation leaked by a failed order", func(a *fakeAPI, l fakeLedger, r *fakeReceiver, _ *Input) {
			a.orders["o1"].Status = "failed"
			l["o1"].Executions = 0
			(*r)[0].Type = "order.failed"
		}, func(r *Report) int { return r.ReservationsLeaked }},
		{"reservation leaked by a lost order", func(a *fakeAPI, l fakeLedger, r *fakeReceiver, _ *Input) {
			delete(a.orders, "o1")
			l["o1"].Executions = 0
			*r = nil
		}, func(r *Report) int { return r.ReservationsLeaked + r.Lost - 1 }},
		{"webhook missing", func(_ *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			*r = nil
		}, func(r *Report) int { return r.WebhooksMissing }},
		{"webhook of another event", func(_ *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			(*r)[0].Type = "order.failed"
		}, func(r *Report) int { return r.WebhooksMissing }},
		{"bad signature", func(_ *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			*r = append(*r, Delivery{Tenant: "a", WebhookID: "w1", Type: "order.executed", OrderID: "o1"})
		}, func(r *Report) int { return r.BadSignatures }},
		{"only badly signed deliveries", func(_ *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			(*r)[0].SignatureValid = false
		}, func(r *Report) int { return r.BadSignatures + r.WebhooksMissing - 1 }},
		{"wrong tenant", func(_ *fakeAPI, _ fakeLedger, r *fakeReceiver, _ *Input) {
			*r = append(*r, Delivery{Tenant: "b", WebhookID: "w1", Type: "order.executed", OrderID: "o1", SignatureValid: true})
		}, func(r *Report) int { return r.WrongTenant }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, l, r, in := healthy()
			tt.spoil(api, l, &r, &in)
			rep := check(t, api, l, r, in)
			if got := tt.want(rep); got != 1 {
				t.Errorf("counted %d, want 1: %s", got, rep)
			}
			if rep.Violations() == 0 {
				t.Errorf("no violation reported: %s", rep)
			}
			if len(rep.Examples) == 0 {
				t.Errorf("no example named: %s", rep)
			}
		})
	}
}

type fakeLister map[string][]Listed

func (f fakeLister) List(_ context.Context, tenant string) ([]Listed, error) { return f[tenant], nil }

// TestCheckUnacknowledged: an order no client got a 202 for is counted; when it was
// filled and so was the order its intent's client got, that intent executed twice.
func TestCheckUnacknowledged(t *testing.T) {
	api, l, r, in := healthy()
	l["o9"] = &LedgerEntry{Executions: 1}
	lister := fakeLister{"a": {{ID: "o1", Status: "executed", Intent: "k1"}, {ID: "o9", Status: "funds_reserved", Intent: "k1"}, {ID: "o8", Status: "failed", Intent: "k7"}}}
	c := &Checker{API: api, Ledger: l, Receiver: r, Lister: lister}
	rep, err := c.Check(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unacknowledged != 2 || rep.ExecutedTwice != 1 {
		t.Errorf("unacknowledged %d, executed twice %d; want 2 and 1: %s", rep.Unacknowledged, rep.ExecutedTwice, rep)
	}
	lister["a"] = lister["a"][:1]
	if rep, _ := c.Check(context.Background(), in); rep.Unacknowledged != 0 || rep.Violations() != 0 {
		t.Errorf("with every order acknowledged: %s", rep)
	}
}

func TestCheckDuplicatesAreNotViolations(t *testing.T) {
	api, l, r, in := healthy()
	r = append(r, r[0], Delivery{Tenant: "a", WebhookID: "w9", Type: "order.executed", OrderID: "o1", SignatureValid: true})
	rep := check(t, api, l, r, in)
	if rep.DuplicateWebhooks != 2 || rep.Violations() != 0 {
		t.Errorf("got %d duplicates and %d violations, want 2 and 0: %s", rep.DuplicateWebhooks, rep.Violations(), rep)
	}
}

func TestCheckUnsubscribedTenantNeedsNoWebhook(t *testing.T) {
	api, l, _, in := healthy()
	in.Subscribed = nil
	if rep := check(t, api, l, nil, in); rep.Violations() != 0 {
		t.Errorf("reported %s", rep)
	}
}

// TestWaitUntilSettled: Wait keeps reading until the order ends, reads a terminal order
// once, and gives up at its deadline with the order stuck.
func TestWaitUntilSettled(t *testing.T) {
	api, l, r, in := healthy()
	api.orders["o1"].Status = "validated"
	c := &Checker{API: api, Ledger: l, Receiver: r}
	go func() {
		time.Sleep(700 * time.Millisecond)
		api.mu.Lock()
		api.orders["o1"].Status = "executed"
		api.mu.Unlock()
	}()
	rep, err := c.Wait(context.Background(), in, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Violations() != 0 {
		t.Fatalf("after waiting: %s", rep)
	}
	reads := api.reads
	if _, err := c.Check(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if api.reads != reads {
		t.Errorf("a terminal order was read again")
	}

	api, l, r, in = healthy()
	api.orders["o1"].Status = "pending"
	c = &Checker{API: api, Ledger: l, Receiver: r}
	rep, err = c.Wait(context.Background(), in, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stuck != 1 {
		t.Errorf("after the deadline: %s", rep)
	}
}

// TestHTTPSources reads an order, a ledger entry and a receiver log over the real
// encodings, 404s included.
func TestHTTPSources(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/orders/o1" && r.Header.Get("Authorization") == "Bearer ka":
			w.Write([]byte(`{"id":"o1","status":"executed","updated_at":"2026-01-02T03:04:05Z"}`))
		case r.URL.Path == "/v1/orders" && r.URL.Query().Get("cursor") == "":
			w.Write([]byte(`{"data":[{"id":"o2","status":"failed","metadata":{"intent":"k2"}}],"next_cursor":"o2"}`))
		case r.URL.Path == "/v1/orders" && r.URL.Query().Get("cursor") == "o2":
			w.Write([]byte(`{"data":[{"id":"o1","status":"executed"}]}`))
		case r.URL.Path == "/_sim/orders/o1":
			w.Write([]byte(`{"order_id":"o1","executions":1,"reservation_open":true}`))
		case strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") != "Bearer ka":
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	api := &HTTPAPI{BaseURL: srv.URL, Keys: map[string]string{"a": "ka", "b": "kb"}}
	if o, err := api.Order(ctx, "a", "o1"); err != nil || o.Status != "executed" || !o.UpdatedAt.Equal(t0) {
		t.Errorf("order: %+v, %v", o, err)
	}
	if _, err := api.Order(ctx, "a", "o2"); err != ErrNotFound {
		t.Errorf("unknown order: %v, want ErrNotFound", err)
	}
	if _, err := api.Order(ctx, "b", "o1"); err == nil || err == ErrNotFound {
		t.Errorf("a 401 must be an error, not a loss: %v", err)
	}
	if list, err := api.List(ctx, "a"); err != nil || len(list) != 2 || list[0] != (Listed{ID: "o2", Status: "failed", Intent: "k2"}) || list[1].ID != "o1" {
		t.Errorf("list: %+v, %v", list, err)
	}
	ledger := &HTTPLedger{BaseURL: srv.URL}
	if e, err := ledger.Order(ctx, "o1"); err != nil || e.Executions != 1 || !e.ReservationOpen {
		t.Errorf("ledger: %+v, %v", e, err)
	}
	if _, err := ledger.Order(ctx, "o2"); err != ErrNotFound {
		t.Errorf("unknown ledger entry: %v", err)
	}

	path := filepath.Join(t.TempDir(), "deliveries.jsonl")
	if d, err := LogFile(path).Deliveries(); err != nil || len(d) != 0 {
		t.Errorf("a missing log: %v, %v", d, err)
	}
	line, _ := json.Marshal(Delivery{Tenant: "a", WebhookID: "w1", Type: "order.executed", OrderID: "o1", SignatureValid: true, At: t0})
	os.WriteFile(path, append(append(line, '\n'), `{"tenant":"a","webhook_`...), 0o600)
	d, err := LogFile(path).Deliveries()
	if err != nil || len(d) != 1 || d[0].WebhookID != "w1" || !d[0].SignatureValid {
		t.Errorf("log: %+v, %v", d, err)
	}
}

func TestTables(t *testing.T) {
	api, l, r, in := healthy()
	delete(api.orders, "o1")
	rep := check(t, api, l, r, in)
	s := rep.String()
	for _, want := range []string{"lost", "o1", "finish after last fault"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	md := Markdown([]*Report{rep, rep})
	if n := strings.Count(md, "\n"); n != 4 {
		t.Errorf("markdown has %d lines, want 4:\n%s", n, md)
	}
}

// A process stopped with SIGTERM must exit 0 within its grace period: one that took too
// long, one killed after it, and one that exited 1 each count; one in time does not.
func TestCheckExitedLate(t *testing.T) {
	api, l, r, in := healthy()
	in.Exits = []Exit{
		{Process: "api 0", Code: 0, Took: 300 * time.Millisecond, Grace: 15 * time.Second},
		{Process: "worker 0", Code: 0, Took: 26 * time.Second, Grace: 25 * time.Second},
		{Process: "worker 1", Code: -1, Took: 25 * time.Second, Grace: 25 * time.Second},
		{Process: "api 1", Code: 1, Took: time.Second, Grace: 15 * time.Second},
	}
	rep := check(t, api, l, r, in)
	if rep.ExitedLate != 3 || rep.Violations() != 3 || rep.SlowestExit != 26*time.Second {
		t.Errorf("exited late = %d, violations = %d, slowest = %s; want 3, 3, 26s:\n%s", rep.ExitedLate, rep.Violations(), rep.SlowestExit, rep)
	}
	if s := rep.String(); !strings.Contains(s, "worker 0 (exit 0 after 26s, grace 25s)") || !strings.Contains(s, "exited late") {
		t.Errorf("the table does not name the late process:\n%s", s)
	}
}
