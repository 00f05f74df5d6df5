package apitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/asyncgate/asyncgate"
	"github.com/asyncgate/asyncgate/internal/apitest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a testing.TB that records the errors reported to it instead
// of failing the test.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// answer is what the fake API answers.
type answer struct {
	status int
	header map[string]string // X-Request-Id: rid unless set ("" removes it)
	body   string
}

func (a answer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Request-Id", "rid-1")
	for k, v := range a.header {
		if v == "" {
			w.Header().Del(k)
			continue
		}
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

const (
	orderID   = "0190f1a2-7b3c-7d4e-8f90-123456789abc"
	orderJSON = `{"id":"` + orderID + `","account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market",` +
		`"status":"pending","created_at":"2026-01-02T03:04:05.123456789Z","updated_at":"2026-01-02T03:04:05Z","deadline":"2026-01-02T03:19:05Z","version":1}`
	notFoundJSON = `{"type":"https://asyncgate.dev/problems/not_found","title":"Not found","status":404,"detail":"no such order","code":"not_found","instance":"/x","request_id":"rid-1"}`
)

var (
	jsonCT    = map[string]string{"Content-Type": "application/json"}
	problemCT = map[string]string{"Content-Type": "application/problem+json"}
)

func TestTransport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		method  string
		path    string
		unknown bool // mark with ExpectUnknownRoute
		answer  answer
		wantErr string // a regexp the one reported error must match; "" for none
	}{
		{
			name: "matching response", method: "GET", path: "/healthz",
			answer: answer{200, jsonCT, `{"status":"ok"}`},
		},
		{
			name: "order with every optional field", method: "GET", path: "/v1/orders/" + orderID,
			answer: answer{200, map[string]string{"Content-Type": "application/json", "Retry-After": "1"},
				strings.Replace(orderJSON, `"version":1`, `"version":4,"limit_price":1.5,"client_order_id":"c-1","callback_url":"https://example.com/h",`+
					`"metadata":{"k":"v"},"reason":"x","cancel_requested":true,"fill":{"execution_id":"e","price":1,"quantity":1,"filled_at":"2026-01-02T03:04:05Z"}`, 1)},
		},
		{
			name: "extra field", method: "GET", path: "/healthz",
			answer:  answer{200, jsonCT, `{"status":"ok","uptime":3}`},
			wantErr: `GET /healthz answered 200(?s:.*)uptime`,
		},
		{
			name: "missing required field", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{200, jsonCT, strings.Replace(orderJSON, `"version":1`, `"cancel_requested":false`, 1)},
			wantErr: `property "version" is missing`,
		},
		{
			name: "undocumented status", method: "GET", path: "/healthz",
			answer:  answer{201, jsonCT, `{"status":"ok"}`},
			wantErr: `GET /healthz answered 201(?s:.*)status is not supported`,
		},
		{
			name: "wrong content type", method: "GET", path: "/healthz",
			answer:  answer{200, map[string]string{"Content-Type": "text/plain"}, `ok`},
			wantErr: `header Content-Type has unexpected value: "text/plain"`,
		},
		{
			name: "error as plain JSON instead of a problem", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{404, jsonCT, notFoundJSON},
			wantErr: `"application/json"`,
		},
		{
			name: "missing required header", method: "GET", path: "/healthz",
			answer:  answer{200, map[string]string{"Content-Type": "application/json", "X-Request-Id": ""}, `{"status":"ok"}`},
			wantErr: `response header "X-Request-Id" missing`,
		},
		{
			name: "header of the wrong type", method: "POST", path: "/v1/orders/" + orderID + "/cancel",
			answer:  answer{202, map[string]string{"Content-Type": "application/json", "Location": "/v1/orders/" + orderID, "Retry-After": "soon"}, orderJSON},
			wantErr: `header "Retry-After"`,
		},
		{
			name: "unknown problem code", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{404, problemCT, strings.Replace(notFoundJSON, `"code":"not_found"`, `"code":"gone"`, 1)},
			wantErr: `"gone"`,
		},
		{
			name: "timestamp not in date-time format", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{200, jsonCT, strings.Replace(orderJSON, `"deadline":"2026-01-02T03:19:05Z"`, `"deadline":"tomorrow"`, 1)},
			wantErr: `date-time`,
		},
		{
			name: "id not in uuid format", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{200, jsonCT, strings.Replace(orderJSON, orderID, "order-1", 1)},
			wantErr: `uuid`,
		},
		{
			name: "status not in the enum", method: "GET", path: "/v1/orders/" + orderID,
			answer:  answer{200, jsonCT, strings.Replace(orderJSON, `"status":"pending"`, `"status":"done"`, 1)},
			wantErr: `"done"`,
		},
		{
			name: "unknown path", method: "GET", path: "/v2/orders",
			answer:  answer{404, problemCT, notFoundJSON},
			wantErr: `openapi.yaml has no operation GET /v2/orders(?s:.*)ExpectUnknownRoute`,
		},
		{
			name: "unknown method", method: "DELETE", path: "/v1/orders/" + orderID,
			answer:  answer{405, map[string]string{"Content-Type": "application/problem+json", "Allow": "GET"}, methodNotAllowedJSON},
			wantErr: `openapi.yaml has no operation DELETE`,
		},
		{
			name: "expected unknown path", method: "GET", path: "/v2/orders", unknown: true,
			answer: answer{404, problemCT, notFoundJSON},
		},
		{
			name: "expected unknown path answered 200", method: "GET", path: "/v2/orders", unknown: true,
			answer:  answer{200, jsonCT, `{}`},
			wantErr: `must get 404, not 200`,
		},
		{
			name: "expected unknown path answered with another shape", method: "GET", path: "/v2/orders", unknown: true,
			answer:  answer{404, jsonCT, `{"error":"not found"}`},
			wantErr: `"application/json"`,
		},
		{
			name: "expected unknown method", method: "DELETE", path: "/v1/orders/" + orderID, unknown: true,
			answer: answer{405, map[string]string{"Content-Type": "application/problem+json", "Allow": "GET"}, methodNotAllowedJSON},
		},
		{
			name: "expected unknown method without Allow", method: "DELETE", path: "/v1/orders/" + orderID, unknown: true,
			answer:  answer{405, problemCT, methodNotAllowedJSON},
			wantErr: `response header "Allow" missing`,
		},
		{
			name: "documented route marked as unknown", method: "GET", path: "/healthz", unknown: true,
			answer:  answer{200, jsonCT, `{"status":"ok"}`},
			wantErr: `marked with apitest.ExpectUnknownRoute, but openapi.yaml has GET /healthz`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.answer)
			t.Cleanup(srv.Close)
			rec := &recorder{TB: t}
			c := apitest.Client(rec, srv.URL)
			req, err := http.NewRequestWithContext(t.Context(), tt.method, tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.unknown {
				req = apitest.ExpectUnknownRoute(req)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.answer.status || string(body) != tt.answer.body {
				t.Errorf("the test got %d %q, want the answer untouched: %d %q", resp.StatusCode, body, tt.answer.status, tt.answer.body)
			}
			errs := rec.errors()
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Errorf("reported %d errors, want none:\n%s", len(errs), strings.Join(errs, "\n"))
				}
				return
			}
			if len(errs) != 1 || !regexp.MustCompile(tt.wantErr).MatchString(errs[0]) {
				t.Errorf("reported %q, want one error matching %q", errs, tt.wantErr)
			}
		})
	}
}

const methodNotAllowedJSON = `{"type":"https://asyncgate.dev/problems/method_not_allowed","title":"Method not allowed","status":405,"code":"method_not_allowed"}`

func TestTransportPassesErrorsThrough(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(answer{200, jsonCT, `{"status":"ok"}`})
	srv.Close()
	rec := &recorder{TB: t}
	c := apitest.Client(rec, srv.URL)
	if resp, err := c.Get("/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("Get to a closed server succeeded")
	}
	if errs := rec.errors(); len(errs) > 0 {
		t.Errorf("a failed request reported %q; the caller gets the error instead", errs)
	}
}

func TestDefaultIsLoadedOnce(t *testing.T) {
	t.Parallel()
	v1, err := apitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := apitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	if v1 != v2 {
		t.Error("Default returned two validators")
	}
}

func TestNewRefusesAnInvalidDocument(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"not OpenAPI": `{"openapi": "3.0.3", "info": {"title": "x"}, "paths": {"/a": {"get": {"responses": "nope"}}}}`,
		"no unmatched-route extension": `openapi: 3.0.3
info: {title: x, version: "1"}
paths: {}
`,
		"extension refers to nothing": `openapi: 3.0.3
info: {title: x, version: "1"}
paths: {}
x-unmatched-route-responses:
  '404': {$ref: '#/components/responses/NotFound'}
  '405': {$ref: '#/components/responses/NotFound'}
`,
	}
	for name, spec := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := apitest.New([]byte(spec)); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

// TestSpecComponentsUsed stands in for Redocly's no-unused-components rule,
// which does not follow the $refs of x-unmatched-route-responses: every
// component of openapi.yaml must be referenced somewhere.
func TestSpecComponentsUsed(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(asyncgate.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	spec := string(asyncgate.OpenAPI)
	var unused []string
	check := func(section string, names []string) {
		for _, n := range names {
			if !strings.Contains(spec, "'#/components/"+section+"/"+n+"'") {
				unused = append(unused, section+"/"+n)
			}
		}
	}
	check("schemas", keys(doc.Components.Schemas))
	check("responses", keys(doc.Components.Responses))
	check("parameters", keys(doc.Components.Parameters))
	check("headers", keys(doc.Components.Headers))
	check("requestBodies", keys(doc.Components.RequestBodies))
	check("examples", keys(doc.Components.Examples))
	if diff := cmp.Diff([]string(nil), unused); diff != "" {
		t.Errorf("unused components (-want +got):\n%s", diff)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
