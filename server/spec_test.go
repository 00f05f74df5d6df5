package server_test

// These tests drive the real API (server, store, queues, workers and the
// downstream simulator, on a real redis-server) through apitest.Client, so
// that every response they receive is validated against openapi.yaml: they
// exercise every operation and every status the document gives it, and
// each also asserts what the response says.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate"
	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The API keys of two tenants.
const (
	keyA = "key-of-tenant-a-0123456789"
	keyB = "key-of-tenant-b-0123456789"
)

var apiKeys = map[string]string{keyA: "tenant-a", keyB: "tenant-b"}

// testBundle is an asyncgate (API and worker) on a fresh Redis database,
// with the simulator as both downstreams, served at url.
type testBundle struct {
	app *app.App
	sim *sim.Sim
	url string
}

// setup builds the App and serves its API; the worker (and the watcher that
// wakes long-polls) runs only once the test calls start, so a test can look
// at orders before anything processes them.
func setup(t *testing.T) *testBundle {
	t.Helper()
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	// A task that finds an order's lease held waits until the lease
	// expires (LeaseTTL, 30s by default), even when its holder releases it
	// at once: a short lease keeps the cancel test fast. The lease must
	// outlast a downstream call's budget.
	ds := downstream.Config{BaseURL: simSrv.URL, Timeout: 500 * time.Millisecond, Budget: time.Second}
	a, err := app.New(app.Config{
		Redis:     redistest.Shared(t).NewClient(t),
		API:       true,
		Worker:    true,
		Server:    server.Config{APIKeys: apiKeys},
		Portfolio: ds,
		Execution: ds,
		Saga:      jobs.SagaConfig{LeaseTTL: 2 * time.Second},
		// The production guard, with example.com resolving to a public
		// address without asking DNS: callback URLs are checked at placement.
		Webhooks: app.WebhooksConfig{Guard: webhooks.GuardConfig{Resolver: staticResolver{"example.com": "93.184.216.34"}}},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &testBundle{app: a, sim: s})
}

// serve serves b.app's API on a loopback port.
func serve(t *testing.T, b *testBundle) *testBundle {
	t.Helper()
	srv := httptest.NewServer(b.app.Handler())
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// start runs the worker, the reconciler and the watcher.
func (b *testBundle) start(t *testing.T) {
	t.Helper()
	if err := b.app.Start(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.app.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// reqOption changes a request before it is sent.
type reqOption = apitest.ReqOption

func withHeader(k, v string) reqOption {
	return func(r *http.Request) *http.Request { r.Header.Set(k, v); return r }
}

func withoutHeader(k string) reqOption {
	return func(r *http.Request) *http.Request { r.Header.Del(k); return r }
}

// do sends a request with the API key key ("" for none) and, when body is
// not empty, Content-Type: application/json. It returns the response and
// its body. The response is validated against openapi.yaml by a client of
// t's own, so that a mismatch fails the (sub)test that caused it.
func (b *testBundle) do(t *testing.T, method, path, key, body string, opts ...reqOption) (*http.Response, []byte) {
	t.Helper()
	return apitest.Do(t, b.url, method, path, key, body, opts...)
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	return apitest.Decode[T](t, body)
}

func wantStatus(t *testing.T, resp *http.Response, body []byte, status int) {
	t.Helper()
	apitest.WantStatus(t, resp, body, status)
}

// wantProblem checks that the response is the problem code with status and
// exactly the field errors fields, and returns it.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, code string, fields ...orders.FieldError) server.Problem {
	t.Helper()
	wantStatus(t, resp, body, status)
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	p := decode[server.Problem](t, body)
	want := server.Problem{
		Type: server.ProblemBase + code, Title: p.Title, Status: status, Detail: p.Detail, Code: code,
		Instance: resp.Request.URL.EscapedPath(), RequestID: resp.Header.Get("X-Request-Id"), Errors: fields,
	}
	if diff := cmp.Diff(want, p, cmpopts.IgnoreUnexported(server.Problem{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}
	if p.Title == "" || p.Detail == "" || p.RequestID == "" {
		t.Errorf("problem without title, detail or request_id: %s", body)
	}
	return p
}

func marketOrder() orders.Request {
	return orders.Request{AccountID: "acc-1", Symbol: "ACME", Side: orders.Buy, Quantity: 2, Type: orders.Market}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// place places req for the tenant of key and checks the 202.
func (b *testBundle) place(t *testing.T, key string, req orders.Request) orders.Order {
	t.Helper()
	resp, body := b.do(t, "POST", "/v1/orders", key, jsonOf(t, req))
	wantStatus(t, resp, body, http.StatusAccepted)
	o := decode[orders.Order](t, body)
	if got, want := resp.Header.Get("Location"), "/v1/orders/"+o.ID; got != want {
		t.Errorf("Location %q, want %q", got, want)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if diff := cmp.Diff(req, o.Request); diff != "" {
		t.Errorf("the order does not echo the request (-want +got):\n%s", diff)
	}
	if o.Status != orders.Pending || o.Version != 1 || o.CancelRequested || !o.Deadline.After(o.CreatedAt) {
		t.Errorf("new order: status %s, version %d, cancel_requested %t, created %s, deadline %s; want pending, 1, false, deadline after creation",
			o.Status, o.Version, o.CancelRequested, o.CreatedAt, o.Deadline)
	}
	return o
}

// waitTerminal long-polls the order until it is terminal and returns the last answer.
func (b *testBundle) waitTerminal(t *testing.T, key, id string) (orders.Order, *http.Response) {
	t.Helper()
	// Each long-poll returns on a status change; an order has at most four.
	for range 10 {
		resp, body := b.do(t, "GET", "/v1/orders/"+id+"?wait=20s", key, "")
		wantStatus(t, resp, body, http.StatusOK)
		o := decode[orders.Order](t, body)
		if o.Status.Terminal() {
			return o, resp
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("order %s is %s, not terminal, but has no Retry-After", id, o.Status)
		}
	}
	t.Fatalf("order %s is not terminal after 10 long-polls", id)
	return orders.Order{}, nil
}

func (b *testBundle) events(t *testing.T, key, id string) []orders.Event {
	t.Helper()
	resp, body := b.do(t, "GET", "/v1/orders/"+id+"/events", key, "")
	wantStatus(t, resp, body, http.StatusOK)
	return decode[server.EventList](t, body).Data
}

func eventTypes(evs []orders.Event) []orders.EventType {
	var out []orders.EventType
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			out = append(out, "seq out of order")
		}
		out = append(out, e.Type)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestOrderOutcomes places orders that end each way the worker can end
// them, follows each with long-polls, and reads its timeline.
func TestOrderOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sim.SetBalance("poor", 0)
	if err := b.sim.SetFaults(sim.Execution, sim.Faults{RefuseSymbols: []string{"NOPE"}}); err != nil {
		t.Fatal(err)
	}
	b.start(t)

	tests := []struct {
		name       string
		req        orders.Request
		wantStatus orders.Status
		wantReason string
		wantEvents []orders.EventType
	}{
		{
			name: "executed limit order with every optional field",
			req: orders.Request{
				AccountID: "acc-1", Symbol: "ACME", Side: orders.Sell, Quantity: 2.5, Type: orders.Limit, LimitPrice: ptr(101.25),
				ClientOrderID: "outcome-executed", CallbackURL: "https://example.com/hooks", Metadata: map[string]string{"strategy": "rebalance"},
			},
			wantStatus: orders.Executed,
			wantEvents: []orders.EventType{"order.created", "order.validated", "order.funds_reserved", "order.executed"},
		},
		{
			name:       "rejected for insufficient funds",
			req:        orders.Request{AccountID: "poor", Symbol: "ACME", Side: orders.Buy, Quantity: 1, Type: orders.Market},
			wantStatus: orders.Rejected, wantReason: "insufficient_funds",
			wantEvents: []orders.EventType{"order.created", "order.validated", "order.rejected"},
		},
		{
			name:       "failed when execution refuses",
			req:        orders.Request{AccountID: "acc-1", Symbol: "NOPE", Side: orders.Buy, Quantity: 1, Type: orders.Market},
			wantStatus: orders.Failed, wantReason: "execution_refused",
			wantEvents: []orders.EventType{"order.created", "order.validated", "order.funds_reserved", "order.failed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			placed := b.place(t, keyA, tt.req)

			// The Location of the 202 is the order.
			resp, body := b.do(t, "GET", "/v1/orders/"+placed.ID, keyA, "")
			wantStatus(t, resp, body, http.StatusOK)
			if got := decode[orders.Order](t, body); got.ID != placed.ID {
				t.Errorf("GET Location: id %s, want %s", got.ID, placed.ID)
			}

			o, resp := b.waitTerminal(t, keyA, placed.ID)
			if o.Status != tt.wantStatus || o.Reason != tt.wantReason {
				t.Errorf("ended %s (%q), want %s (%q)", o.Status, o.Reason, tt.wantStatus, tt.wantReason)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "" {
				t.Errorf("terminal order has Retry-After %q", ra)
			}
			if (o.Fill != nil) != (o.Status == orders.Executed) {
				t.Errorf("status %s with fill %+v", o.Status, o.Fill)
			}
			if diff := cmp.Diff(tt.req, o.Request); diff != "" {
				t.Errorf("the order does not echo the request (-want +got):\n%s", diff)
			}

			evs := b.events(t, keyA, placed.ID)
			if diff := cmp.Diff(tt.wantEvents, eventTypes(evs)); diff != "" {
				t.Fatalf("event types (-want +got):\n%s", diff)
			}
			if created := evs[0].Order; created == nil || created.ID != placed.ID || created.Status != orders.Pending {
				t.Errorf("order.created carries %+v, want the pending order", created)
			}
			last := evs[len(evs)-1]
			if last.Status != o.Status || last.Reason != o.Reason || o.Version != last.Seq {
				t.Errorf("last event %+v does not match the order (status %s, reason %q, version %d)", last, o.Status, o.Reason, o.Version)
			}
			if diff := cmp.Diff(o.Fill, last.Fill); diff != "" {
				t.Errorf("fill of the order and of its last event differ (-order +event):\n%s", diff)
			}

			// A terminal order answers a long-poll at once, and cannot be cancelled.
			resp, body = b.do(t, "GET", "/v1/orders/"+placed.ID+"?wait=60", keyA, "")
			wantStatus(t, resp, body, http.StatusOK)
			resp, body = b.do(t, "POST", "/v1/orders/"+placed.ID+"/cancel", keyA, "", withHeader("X-Request-Id", "trace-"+placed.ID))
			if p := wantProblem(t, resp, body, http.StatusConflict, "too_late"); p.RequestID != "trace-"+placed.ID {
				t.Errorf("request_id %q, want the one sent", p.RequestID)
			}

			// The list filtered by the final status has the order.
			resp, body = b.do(t, "GET", "/v1/orders?status="+string(o.Status), keyA, "")
			wantStatus(t, resp, body, http.StatusOK)
			if !slices.ContainsFunc(decode[server.OrderList](t, body).Data, func(l *orders.Order) bool { return l.ID == o.ID }) {
				t.Errorf("GET /v1/orders?status=%s does not list order %s: %s", o.Status, o.ID, body)
			}
		})
	}
}

// TestCancel cancels an order before the worker runs, then lets the
// worker carry the cancel out.
func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := b.place(t, keyA, marketOrder())

	for range 2 { // a second cancel is accepted too
		resp, body := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "")
		wantStatus(t, resp, body, http.StatusAccepted)
		got := decode[orders.Order](t, body)
		if !got.CancelRequested || got.Status != orders.Pending {
			t.Errorf("after cancel: status %s, cancel_requested %t; want pending, true", got.Status, got.CancelRequested)
		}
		if loc := resp.Header.Get("Location"); loc != "/v1/orders/"+o.ID {
			t.Errorf("Location %q", loc)
		}
	}
	if diff := cmp.Diff([]orders.EventType{"order.created", "order.cancel_requested"}, eventTypes(b.events(t, keyA, o.ID))); diff != "" {
		t.Errorf("event types before the worker ran (-want +got):\n%s", diff)
	}

	b.start(t)
	got, _ := b.waitTerminal(t, keyA, o.ID)
	if got.Status != orders.Cancelled || got.Reason != "cancelled_by_client" || got.CancelRequested {
		t.Errorf("ended %s (%q), cancel_requested %t; want cancelled (cancelled_by_client), false", got.Status, got.Reason, got.CancelRequested)
	}
	if diff := cmp.Diff([]orders.EventType{"order.created", "order.cancel_requested", "order.cancelled"}, eventTypes(b.events(t, keyA, o.ID))); diff != "" {
		t.Errorf("event types (-want +got):\n%s", diff)
	}
	// Cancelling a cancelled order is accepted: it is what the client wants.
	resp, body := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "")
	wantStatus(t, resp, body, http.StatusAccepted)
}

func TestDuplicateClientOrderID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := marketOrder()
	req.ClientOrderID = "dup-1"
	first := b.place(t, keyA, req)

	req.Quantity = 3 // a retry need not be identical: the id decides
	resp, body := b.do(t, "POST", "/v1/orders", keyA, jsonOf(t, req))
	wantProblem(t, resp, body, http.StatusConflict, "duplicate_client_order_id")
	if loc := resp.Header.Get("Location"); loc != "/v1/orders/"+first.ID {
		t.Errorf("Location %q, want the first order's", loc)
	}
	// Another tenant may use the same client_order_id.
	b.place(t, keyB, req)
}

// TestListOrders pages through orders that no worker touches, so their
// statuses hold still.
func TestListOrders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string // newest first
	for range 3 {
		ids = slices.Insert(ids, 0, b.place(t, keyA, marketOrder()).ID)
	}
	b.place(t, keyB, marketOrder())

	list := func(t *testing.T, key, query string) server.OrderList {
		t.Helper()
		resp, body := b.do(t, "GET", "/v1/orders"+query, key, "")
		wantStatus(t, resp, body, http.StatusOK)
		return decode[server.OrderList](t, body)
	}
	idsOf := func(l server.OrderList) []string {
		out := []string{}
		for _, o := range l.Data {
			out = append(out, o.ID)
		}
		return out
	}
	tests := []struct {
		name, key, query string
		want             []string
		wantNext         string
	}{
		{name: "all", key: keyA, want: ids},
		{name: "first page", key: keyA, query: "?limit=2", want: ids[:2], wantNext: ids[1]},
		{name: "last page", key: keyA, query: "?limit=2&cursor=" + ids[1], want: ids[2:]},
		{name: "by status", key: keyA, query: "?status=pending&limit=200", want: ids},
		{name: "by another status", key: keyA, query: "?status=executed", want: []string{}},
		{name: "a page of one", key: keyA, query: "?limit=1&cursor=" + ids[0], want: ids[1:2], wantNext: ids[1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := list(t, tt.key, tt.query)
			if diff := cmp.Diff(tt.want, idsOf(got)); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if got.NextCursor != tt.wantNext {
				t.Errorf("next_cursor %q, want %q", got.NextCursor, tt.wantNext)
			}
		})
	}
	t.Run("other tenant", func(t *testing.T) {
		t.Parallel()
		if got := list(t, keyB, ""); len(got.Data) != 1 || slices.Contains(ids, got.Data[0].ID) {
			t.Errorf("tenant B lists %v, want only its own order", idsOf(got))
		}
	})
}

func TestListOrdersInvalidQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	statusErr := orders.FieldError{Field: "status", Reason: "must be one of pending, validated, funds_reserved, executed, rejected, failed, cancelled"}
	limitErr := orders.FieldError{Field: "limit", Reason: "must be an integer from 1 to 200"}
	cursorErr := orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"}
	tests := []struct {
		query string
		want  []orders.FieldError
	}{
		{"?status=done", []orders.FieldError{statusErr}},
		{"?limit=0", []orders.FieldError{limitErr}},
		{"?limit=201", []orders.FieldError{limitErr}},
		{"?limit=ten", []orders.FieldError{limitErr}},
		{"?cursor=page-2", []orders.FieldError{cursorErr}},
		{"?status=done&limit=-1&cursor=x", []orders.FieldError{statusErr, limitErr, cursorErr}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, "GET", "/v1/orders"+tt.query, keyA, "")
			wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", tt.want...)
		})
	}
}

func TestOrderNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	theirs := b.place(t, keyB, marketOrder())
	unknown := "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	tests := []struct{ name, method, path string }{
		{"get unknown", "GET", "/v1/orders/" + unknown},
		{"get with wait unknown", "GET", "/v1/orders/" + unknown + "?wait=1s"},
		{"get not a uuid", "GET", "/v1/orders/order-1"},
		{"get another tenant's", "GET", "/v1/orders/" + theirs.ID},
		{"events unknown", "GET", "/v1/orders/" + unknown + "/events"},
		{"events another tenant's", "GET", "/v1/orders/" + theirs.ID + "/events"},
		{"cancel unknown", "POST", "/v1/orders/" + unknown + "/cancel"},
		{"cancel not a uuid", "POST", "/v1/orders/order-1/cancel"},
		{"cancel another tenant's", "POST", "/v1/orders/" + theirs.ID + "/cancel"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				resp, body := b.do(t, tt.method, tt.path, keyA, "")
				wantProblem(t, resp, body, http.StatusNotFound, "not_found")
			})
		}
	})
	// After every case: tenant A's cancel did not touch tenant B's order.
	resp, body := b.do(t, "GET", "/v1/orders/"+theirs.ID, keyB, "")
	wantStatus(t, resp, body, http.StatusOK)
	if o := decode[orders.Order](t, body); o.CancelRequested || o.Version != 1 {
		t.Errorf("tenant B's order changed: cancel_requested %t, version %d", o.CancelRequested, o.Version)
	}
}

func TestGetOrderInvalidWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	o := b.place(t, keyA, marketOrder())
	waitErr := orders.FieldError{Field: "wait", Reason: "must be a duration like 30s (at most 1m0s)"}
	for _, wait := range []string{"soon", "-1", "-5s", "1d"} {
		t.Run(wait, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, "GET", "/v1/orders/"+o.ID+"?wait="+wait, keyA, "")
			wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", waitErr)
		})
	}
	t.Run("a wait that ends without change", func(t *testing.T) {
		t.Parallel()
		// Not much shorter: a wait that ends during the first read of the
		// order answers 503 instead of the order (reported to the lead).
		resp, body := b.do(t, "GET", "/v1/orders/"+o.ID+"?wait=1s", keyA, "")
		wantStatus(t, resp, body, http.StatusOK)
		if got := decode[orders.Order](t, body); got.Status != orders.Pending || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("status %s, Retry-After %q; want pending, 1", got.Status, resp.Header.Get("Retry-After"))
		}
	})
}

func TestPlaceOrderInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	valid := jsonOf(t, marketOrder())
	tests := []struct {
		name   string
		body   string
		opts   []reqOption
		status int
		code   string
		want   []orders.FieldError
	}{
		{name: "malformed JSON", body: `{"account_id": "acc-1",`, status: 400, code: "malformed_request"},
		{name: "syntax error", body: `{"account_id" "acc-1"}`, status: 400, code: "malformed_request"},
		{name: "empty body", body: "", status: 400, code: "malformed_request"},
		{name: "data after the object", body: valid + `{}`, status: 400, code: "malformed_request"},
		{name: "not an object", body: `[1, 2]`, status: 400, code: "malformed_request"},
		{
			name: "unknown field", body: strings.Replace(valid, `{`, `{"nickname":"x",`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "nickname", Reason: "is not a known field"}},
		},
		{
			name: "wrong type", body: strings.Replace(valid, `"quantity":2`, `"quantity":"ten"`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "quantity", Reason: "must be a number"}},
		},
		{
			name: "wrong type in metadata", body: strings.Replace(valid, `{`, `{"metadata":{"n":1},`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "metadata", Reason: "must be a string"}},
		},
		{
			name: "missing fields", body: `{}`, status: 422, code: "validation_failed",
			want: []orders.FieldError{
				{Field: "account_id", Reason: "is required"}, {Field: "symbol", Reason: "is required"}, {Field: "side", Reason: "is required"},
				{Field: "quantity", Reason: "must be greater than 0"}, {Field: "type", Reason: "is required"},
			},
		},
		{
			name: "zero quantity", body: strings.Replace(valid, `"quantity":2`, `"quantity":0`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "quantity", Reason: "must be greater than 0"}},
		},
		{
			name: "limit order without price", body: strings.Replace(valid, `"market"`, `"limit"`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "limit_price", Reason: "is required for limit orders"}},
		},
		{
			name: "market order with price", body: strings.Replace(valid, `{`, `{"limit_price":10,`, 1), status: 422, code: "validation_failed",
			want: []orders.FieldError{{Field: "limit_price", Reason: "must be absent for market orders"}},
		},
		{
			name: "bad values", body: `{"account_id":"acc 1","symbol":"acme","side":"hold","quantity":1,"type":"stop","callback_url":"ftp://x"}`,
			status: 422, code: "validation_failed",
			want: []orders.FieldError{
				{Field: "account_id", Reason: "must be 1-64 characters of letters, digits, '_', '.', ':' or '-'"},
				{Field: "symbol", Reason: "must be 1-16 upper-case letters, digits, '.', '-' or '/'"},
				{Field: "side", Reason: "must be buy or sell"},
				{Field: "type", Reason: "must be market or limit"},
				{Field: "callback_url", Reason: "must be an http(s) URL of at most 2048 characters"},
			},
		},
		{
			name: "body too large", body: strings.Replace(valid, `{`, `{"client_order_id":"`+strings.Repeat("x", 70<<10)+`",`, 1),
			status: 413, code: "body_too_large",
		},
		{name: "not JSON", body: valid, opts: []reqOption{withHeader("Content-Type", "text/plain")}, status: 415, code: "unsupported_media_type"},
		{name: "bad content type", body: valid, opts: []reqOption{withHeader("Content-Type", "application/json; x")}, status: 415, code: "unsupported_media_type"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				resp, body := b.do(t, "POST", "/v1/orders", keyA, tt.body, tt.opts...)
				wantProblem(t, resp, body, tt.status, tt.code, tt.want...)
			})
		}
	})
	resp, body := b.do(t, "GET", "/v1/orders", keyA, "")
	wantStatus(t, resp, body, http.StatusOK)
	if l := decode[server.OrderList](t, body); len(l.Data) != 0 {
		t.Errorf("invalid requests stored %d orders", len(l.Data))
	}
	// Without Content-Type the body is taken as JSON.
	resp, body = b.do(t, "POST", "/v1/orders", keyA, valid, withoutHeader("Content-Type"))
	wantStatus(t, resp, body, http.StatusAccepted)
}

func TestUnauthorized(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	routes := []struct{ method, path, body string }{
		{"POST", "/v1/orders", `{"malformed":`}, // the key is checked first
		{"GET", "/v1/orders", ""},
		{"GET", "/v1/orders/" + id + "?wait=30s", ""},
		{"GET", "/v1/orders/" + id + "/events", ""},
		{"POST", "/v1/orders/" + id + "/cancel", ""},
		{"GET", "/v1/portfolios/acc-1", ""},
	}
	auths := []struct {
		name, header, wantChallenge string
	}{
		{"no key", "", `Bearer realm="asyncgate"`},
		{"unknown key", "Bearer not-a-key-of-anyone-at-all", `Bearer realm="asyncgate", error="invalid_token"`},
		{"empty key", "Bearer ", `Bearer realm="asyncgate"`},
		{"another scheme", "Basic " + keyA, `Bearer realm="asyncgate"`},
	}
	for _, r := range routes {
		for _, a := range auths {
			t.Run(r.method+" "+r.path+" "+a.name, func(t *testing.T) {
				t.Parallel()
				var opts []reqOption
				if a.header != "" {
					opts = append(opts, withHeader("Authorization", a.header))
				}
				resp, body := b.do(t, r.method, r.path, "", r.body, opts...)
				wantProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
				if got := resp.Header.Get("WWW-Authenticate"); got != a.wantChallenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, a.wantChallenge)
				}
			})
		}
	}
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"GET", "/v2/orders", 404, ""},
		{"GET", "/v1/accounts", 404, ""},
		{"GET", "/v1/orders/" + id + "/fills", 404, ""},
		{"POST", "/v1/orders/" + id + "/refund", 404, ""},
		{"DELETE", "/v1/orders/" + id, 405, "GET"},
		{"PUT", "/v1/orders", 405, "GET, POST"},
		{"GET", "/v1/orders/" + id + "/cancel", 405, "POST"},
		{"POST", "/healthz", 405, "GET"},
		{"DELETE", "/openapi.yaml", 405, "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			// Routes are matched before the key is checked.
			resp, body := b.do(t, tt.method, tt.path, keyA, "", apitest.ExpectUnknownRoute)
			code := "not_found"
			if tt.status == 405 {
				code = "method_not_allowed"
			}
			wantProblem(t, resp, body, tt.status, code)
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestOperations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t.Run("healthz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/healthz", "", "")
		wantStatus(t, resp, body, http.StatusOK)
		if diff := cmp.Diff(map[string]any{"status": "ok"}, decode[map[string]any](t, body)); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/readyz", "", "")
		wantStatus(t, resp, body, http.StatusOK)
		want := map[string]any{
			"status": "ok", "checks": map[string]any{"redis": "ok"},
			"breakers": map[string]any{"portfolio": map[string]any{"state": "closed"}, "execution": map[string]any{"state": "closed"}},
		}
		if diff := cmp.Diff(want, decode[map[string]any](t, body)); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
	})
	t.Run("docs", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/docs", "", "")
		wantStatus(t, resp, body, http.StatusOK)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(body), "asyncgate API") {
			t.Errorf("GET /docs: Content-Type %q, want an HTML page about the asyncgate API", ct)
		}
	})
	t.Run("openapi.yaml", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/openapi.yaml", "", "")
		wantStatus(t, resp, body, http.StatusOK)
		if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
			t.Errorf("Content-Type %q, want application/yaml", ct)
		}
		if string(body) != string(asyncgate.OpenAPI) {
			t.Error("GET /openapi.yaml is not the embedded document")
		}
	})
	t.Run("request id", func(t *testing.T) {
		t.Parallel()
		resp, _ := b.do(t, "GET", "/healthz", "", "", withHeader("X-Request-Id", "mine-1"))
		if got := resp.Header.Get("X-Request-Id"); got != "mine-1" {
			t.Errorf("X-Request-Id %q, want mine-1", got)
		}
		resp, _ = b.do(t, "GET", "/healthz", "", "", withHeader("X-Request-Id", strings.Repeat("x", 129)))
		if got := resp.Header.Get("X-Request-Id"); len(got) > 128 || got == "" {
			t.Errorf("X-Request-Id %q, want a fresh one of at most 128 characters", got)
		}
	})
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := jsonOf(t, marketOrder())
	key := withHeader("Idempotency-Key", "place-1")

	resp, first := b.do(t, "POST", "/v1/orders", keyA, body, key)
	wantStatus(t, resp, first, http.StatusAccepted)
	if r := resp.Header.Get("Idempotent-Replayed"); r != "" {
		t.Errorf("first answer has Idempotent-Replayed %q", r)
	}
	o := decode[orders.Order](t, first)

	// The same request, written differently: the kept answer.
	same := `{ "type": "market", "quantity": 2, "side": "buy", "symbol": "ACME", "account_id": "acc-1" }`
	resp, again := b.do(t, "POST", "/v1/orders", keyA, same, key)
	wantStatus(t, resp, again, http.StatusAccepted)
	if r, loc := resp.Header.Get("Idempotent-Replayed"), resp.Header.Get("Location"); r != "true" || loc != "/v1/orders/"+o.ID {
		t.Errorf("replay: Idempotent-Replayed %q, Location %q; want true, the first order's", r, loc)
	}
	if string(again) != string(first) {
		t.Errorf("replayed body %s, want the first %s", again, first)
	}

	// The key with another request.
	other := marketOrder()
	other.Quantity = 3
	resp, got := b.do(t, "POST", "/v1/orders", keyA, jsonOf(t, other), key)
	wantProblem(t, resp, got, http.StatusUnprocessableEntity, "idempotency_key_reused")
	resp, got = b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", key)
	wantProblem(t, resp, got, http.StatusUnprocessableEntity, "idempotency_key_reused")

	// Keys are per tenant.
	resp, got = b.do(t, "POST", "/v1/orders", keyB, body, key)
	wantStatus(t, resp, got, http.StatusAccepted)
	if r := resp.Header.Get("Idempotent-Replayed"); r != "" || decode[orders.Order](t, got).ID == o.ID {
		t.Errorf("tenant B got tenant A's answer (Idempotent-Replayed %q)", r)
	}

	// A cancel, and its replay.
	cancelKey := withHeader("Idempotency-Key", "cancel-1")
	for i, wantReplayed := range []string{"", "true"} {
		resp, got = b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", cancelKey)
		wantStatus(t, resp, got, http.StatusAccepted)
		if r := resp.Header.Get("Idempotent-Replayed"); r != wantReplayed {
			t.Errorf("cancel %d: Idempotent-Replayed %q, want %q", i+1, r, wantReplayed)
		}
	}

	// A malformed key.
	bad := withHeader("Idempotency-Key", strings.Repeat("k", 256))
	resp, got = b.do(t, "POST", "/v1/orders", keyA, body, bad)
	wantProblem(t, resp, got, http.StatusBadRequest, "malformed_request")
	resp, got = b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", bad)
	wantProblem(t, resp, got, http.StatusBadRequest, "malformed_request")

	resp, got = b.do(t, "GET", "/v1/orders", keyA, "")
	wantStatus(t, resp, got, http.StatusOK)
	if l := decode[server.OrderList](t, got); len(l.Data) != 1 {
		t.Errorf("tenant A has %d orders, want 1", len(l.Data))
	}
}

// blockingStore creates orders once the test lets it.
type blockingStore struct {
	server.OrderStore
	entered chan struct{} // closed when Create is called
	release chan struct{} // Create returns once it is closed
}

func (s *blockingStore) CreateBound(_ context.Context, o *orders.Order, _ orders.Binding) (*orders.Order, bool, error) {
	close(s.entered)
	<-s.release
	o.Status, o.Version, o.UpdatedAt = orders.Pending, 1, o.CreatedAt
	return o, false, nil
}

type nopQueue struct{ server.Enqueuer }

func (nopQueue) EnqueueOrder(context.Context, string, string, map[string]string) error { return nil }

// TestIdempotencyKeyInUse sends a request while the first with its
// Idempotency-Key is still in the handler.
func TestIdempotencyKeyInUse(t *testing.T) {
	t.Parallel()
	store := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	api, err := server.New(server.Config{APIKeys: apiKeys, Logger: slog.New(slog.DiscardHandler)},
		server.Deps{Orders: store, Queue: nopQueue{}, Redis: okPinger{}, RedisClient: redistest.Shared(t).NewClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	b := &testBundle{url: srv.URL}
	body := jsonOf(t, marketOrder())
	key := withHeader("Idempotency-Key", "slow-1")

	type answer struct {
		resp *http.Response
		err  error
	}
	firstDone := make(chan answer, 1)
	req, err := http.NewRequestWithContext(t.Context(), "POST", "/v1/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Idempotency-Key", "slow-1")
	c := apitest.Client(t, srv.URL)
	go func() {
		resp, err := c.Do(req)
		firstDone <- answer{resp, err}
	}()
	<-store.entered

	resp, got := b.do(t, "POST", "/v1/orders", keyA, body, key)
	wantProblem(t, resp, got, http.StatusConflict, "idempotency_key_in_use")
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}

	close(store.release)
	first := <-firstDone
	if first.err != nil {
		t.Fatal(first.err)
	}
	first.resp.Body.Close()
	if first.resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first request: status %d, want 202", first.resp.StatusCode)
	}
	resp, got = b.do(t, "POST", "/v1/orders", keyA, body, key)
	wantStatus(t, resp, got, http.StatusAccepted)
	if r := resp.Header.Get("Idempotent-Replayed"); r != "true" {
		t.Errorf("after the first ended: Idempotent-Replayed %q, want true", r)
	}
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	a, err := app.New(app.Config{
		Redis: redistest.Shared(t).NewClient(t), API: true,
		Server: server.Config{APIKeys: apiKeys, RateLimit: server.RateLimit{Rate: 2, Period: time.Hour}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	b := serve(t, &testBundle{app: a})
	for _, remaining := range []string{"1", "0"} {
		resp, body := b.do(t, "GET", "/v1/orders", keyA, "")
		wantStatus(t, resp, body, http.StatusOK)
		if l, r := resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"); l != "2" || r != remaining {
			t.Errorf("RateLimit-Limit %q, RateLimit-Remaining %q; want 2, %s", l, r, remaining)
		}
	}
	resp, body := b.do(t, "POST", "/v1/orders", keyA, jsonOf(t, marketOrder()))
	wantProblem(t, resp, body, http.StatusTooManyRequests, "rate_limited")
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q, want seconds", ra)
	}
	// The limit is per key.
	resp, body = b.do(t, "GET", "/v1/orders", keyB, "")
	wantStatus(t, resp, body, http.StatusOK)
}

func TestPortfolio(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sim.SetBalance("acc-rich", 5000)
	get := func(t *testing.T, account string) (*http.Response, []byte) {
		t.Helper()
		return b.do(t, "GET", "/v1/portfolios/"+account, keyA, "")
	}
	resp, body := get(t, "acc-rich")
	wantStatus(t, resp, body, http.StatusOK)
	p := decode[server.Portfolio](t, body)
	if p.AccountID != "acc-rich" || p.Cash != 5000 || p.Available != 5000 || p.Stale {
		t.Errorf("portfolio %+v, want acc-rich with 5000 available, fresh", p)
	}

	resp, body = get(t, "-acc")
	wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed",
		orders.FieldError{Field: "account_id", Reason: "must be 1-64 characters of letters, digits, '_', '.', ':' or '-'"})

	if err := b.sim.SetFaults(sim.Portfolio, sim.Faults{Outage: sim.Outage503}); err != nil {
		t.Fatal(err)
	}
	resp, body = get(t, "acc-rich")
	wantStatus(t, resp, body, http.StatusOK)
	if stale := decode[server.Portfolio](t, body); !stale.Stale || stale.Cash != 5000 || !stale.AsOf.Equal(p.AsOf) {
		t.Errorf("during the outage: %+v, want the last view %+v, stale", stale, p)
	}
	resp, body = get(t, "acc-never-read")
	wantProblem(t, resp, body, http.StatusServiceUnavailable, "portfolio_unavailable")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// deadRedis is a client of a port where no Redis listens.
func deadRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUnavailable runs the API on a Redis that is down: every operation
// that needs it answers 503, and readiness says why.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	a, err := app.New(app.Config{
		Redis: deadRedis(t), API: true,
		Server: server.Config{APIKeys: apiKeys},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	b := serve(t, &testBundle{app: a})
	id := "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	tests := []struct{ method, path, body, code string }{
		{"POST", "/v1/orders", jsonOf(t, marketOrder()), "unavailable"},
		{"GET", "/v1/orders", "", "unavailable"},
		{"GET", "/v1/orders/" + id, "", "unavailable"},
		{"GET", "/v1/orders/" + id + "?wait=1s", "", "unavailable"},
		{"GET", "/v1/orders/" + id + "/events", "", "unavailable"},
		{"POST", "/v1/orders/" + id + "/cancel", "", "unavailable"},
		// No portfolio service is configured.
		{"GET", "/v1/portfolios/acc-1", "", "portfolio_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, tt.method, tt.path, keyA, tt.body)
			wantProblem(t, resp, body, http.StatusServiceUnavailable, tt.code)
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After %q, want 1", ra)
			}
		})
	}
	t.Run("readyz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/readyz", "", "")
		wantStatus(t, resp, body, http.StatusServiceUnavailable)
		want := map[string]any{"status": "unavailable", "checks": map[string]any{"redis": "unreachable"}}
		if diff := cmp.Diff(want, decode[map[string]any](t, body), cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "breakers" })); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
	})
	t.Run("healthz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "GET", "/healthz", "", "")
		wantStatus(t, resp, body, http.StatusOK)
	})
}

// brokenStore fails as a bug would: with errors that are not about
// availability.
type brokenStore struct{ server.OrderStore }

var errBug = errors.New("decode order: unexpected end of JSON input")

func (brokenStore) Create(context.Context, *orders.Order) (*orders.Order, error) { return nil, errBug }
func (brokenStore) Get(context.Context, string, string) (*orders.Order, error)   { return nil, errBug }
func (brokenStore) Events(context.Context, string, string) ([]orders.Event, error) {
	return nil, errBug
}
func (brokenStore) RequestCancel(context.Context, string, string) error { return errBug }
func (brokenStore) WaitForChange(context.Context, string, string, orders.Status) (*orders.Order, error) {
	return nil, errBug
}
func (brokenStore) List(context.Context, string, orders.ListParams) ([]*orders.Order, string, error) {
	return nil, "", errBug
}

type brokenPortfolio struct{}

func (brokenPortfolio) ReadPortfolio(context.Context, string, string) (server.Portfolio, error) {
	return server.Portfolio{}, errBug
}

type okPinger struct{}

func (okPinger) Ping(context.Context) error { return nil }

// TestInternalError runs the API on a store that fails with bugs: every
// operation answers 500, and the cause stays in the log.
func TestInternalError(t *testing.T) {
	t.Parallel()
	api, err := server.New(server.Config{APIKeys: apiKeys, Logger: slog.New(slog.DiscardHandler)},
		server.Deps{Orders: brokenStore{}, Redis: okPinger{}, Portfolio: brokenPortfolio{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	b := &testBundle{url: srv.URL}
	id := "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	tests := []struct{ method, path, body string }{
		{"POST", "/v1/orders", jsonOf(t, marketOrder())},
		{"GET", "/v1/orders", ""},
		{"GET", "/v1/orders/" + id, ""},
		{"GET", "/v1/orders/" + id + "?wait=1s", ""},
		{"GET", "/v1/orders/" + id + "/events", ""},
		{"POST", "/v1/orders/" + id + "/cancel", ""},
		{"GET", "/v1/portfolios/acc-1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, tt.method, tt.path, keyA, tt.body)
			p := wantProblem(t, resp, body, http.StatusInternalServerError, "internal")
			if strings.Contains(p.Detail, "JSON") {
				t.Errorf("detail %q shows the cause to the client", p.Detail)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After %q, want 1", ra)
			}
		})
	}
}

// TestSpecMatchesCode checks the enums of openapi.yaml against the Go
// values they document, so that a new status, event or problem code cannot
// ship undocumented.
func TestSpecMatchesCode(t *testing.T) {
	t.Parallel()
	enum := func(schema string) []string { return apitest.Enum(t, schema) }
	sorted := cmpopts.SortSlices(func(a, b string) bool { return a < b })

	if diff := cmp.Diff(server.ProblemCodes(), enum("ProblemCode"), sorted); diff != "" {
		t.Errorf("ProblemCode enum vs server.ProblemCodes() (-code +spec):\n%s", diff)
	}
	var statuses []string
	events := []string{string(orders.EventCreated), string(orders.EventCancelRequested)}
	for _, s := range orders.Statuses {
		statuses = append(statuses, string(s))
		if s != orders.Pending { // an order is created pending: no change leads there
			events = append(events, string(orders.StatusEvent(s)))
		}
	}
	if diff := cmp.Diff(statuses, enum("OrderStatus")); diff != "" {
		t.Errorf("OrderStatus enum vs orders.Statuses (-code +spec):\n%s", diff)
	}
	if diff := cmp.Diff(events, enum("EventType"), sorted); diff != "" {
		t.Errorf("EventType enum vs orders' event types (-code +spec):\n%s", diff)
	}
	if diff := cmp.Diff([]string{string(orders.Buy), string(orders.Sell)}, enum("Side")); diff != "" {
		t.Errorf("Side enum (-code +spec):\n%s", diff)
	}
	if diff := cmp.Diff([]string{string(orders.Market), string(orders.Limit)}, enum("OrderType")); diff != "" {
		t.Errorf("OrderType enum (-code +spec):\n%s", diff)
	}
	if p := apitest.Spec(t).Components.Schemas["Problem"].Value.Properties["type"].Value.Pattern; !strings.HasPrefix(p, "^"+strings.ReplaceAll(server.ProblemBase, ".", `\.`)) {
		t.Errorf("Problem.type pattern %q does not start with server.ProblemBase %q", p, server.ProblemBase)
	}
}
