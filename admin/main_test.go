package admin_test

// The harness of the dashboard's tests: the real App (API, worker, stores,
// queues and the downstream simulator on a real redis-server), driven over
// HTTP through apitest.Client so that every answer of the admin API is also
// validated against openapi.yaml.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
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

// do sends a request with the API key key ("" for none) and, when body is
// not empty, Content-Type: application/json. It returns the response and
// its body, validated against openapi.yaml by a client of t's own.
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
		Instance: p.Instance, RequestID: resp.Header.Get("X-Request-Id"), Errors: fields,
	}
	if diff := cmp.Diff(want, p, cmpopts.IgnoreUnexported(server.Problem{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}
	if p.Title == "" || p.Detail == "" || p.RequestID == "" || p.Instance == "" {
		t.Errorf("problem without title, detail, instance or request_id: %s", body)
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

// place places req for the tenant of key.
func (b *testBundle) place(t *testing.T, key string, req orders.Request) orders.Order {
	t.Helper()
	resp, body := b.do(t, "POST", "/v1/orders", key, jsonOf(t, req))
	wantStatus(t, resp, body, http.StatusAccepted)
	return decode[orders.Order](t, body)
}

// waitTerminal long-polls the order until it is terminal.
func (b *testBundle) waitTerminal(t *testing.T, key, id string) (orders.Order, *http.Response) {
	t.Helper()
	for range 10 {
		resp, body := b.do(t, "GET", "/v1/orders/"+id+"?wait=20s", key, "")
		wantStatus(t, resp, body, http.StatusOK)
		if o := decode[orders.Order](t, body); o.Status.Terminal() {
			return o, resp
		}
	}
	t.Fatalf("order %s is not terminal after 10 long-polls", id)
	return orders.Order{}, nil
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is a response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) want(t *testing.T, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body: %s", a.status, status, a.body)
	}
}

func (a answer) wantCode(t *testing.T, status int, code string) server.Problem {
	t.Helper()
	a.want(t, status)
	p := decode[server.Problem](t, a.body)
	if p.Code != code || p.Type != server.ProblemBase+code {
		t.Fatalf("problem %s (%s), want %s", p.Code, p.Type, code)
	}
	return p
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

// nopQueue enqueues nothing, for tests that run no worker.
type nopQueue struct{}

func (nopQueue) EnqueueOrder(context.Context, string, string, map[string]string) error {
	return nil
}

func (nopQueue) EnqueueCompensation(context.Context, string, string, map[string]string) error {
	return nil
}

// okPinger is a Redis that is always reachable.
type okPinger struct{}

func (okPinger) Ping(context.Context) error { return nil }
