package server_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// staticResolver answers host → one address, and "no such host" for the rest.
type staticResolver map[string]string

func (r staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// An order's callback_url is checked as an endpoint's URL is, at placement:
// a target the guard refuses is a 422 naming callback_url, never an order
// whose deliveries are retried for days.
func TestPlaceOrderChecksCallbackURL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const valid = `{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":2,"type":"market","callback_url":%q}`
	for _, tt := range []struct {
		name, url, code, reason string
	}{
		{"loopback", "https://127.0.0.1/hooks", "url_not_allowed", "127.0.0.1 is a loopback address"},
		{"localhost", "https://localhost:8443/hooks", "url_not_allowed", "localhost names the loopback interface"},
		{"IPv6 loopback", "https://[::1]/hooks", "url_not_allowed", "::1 is a loopback address"},
		{"metadata", "https://169.254.169.254/latest/meta-data/", "url_not_allowed", "169.254.169.254 is a cloud metadata address"},
		{"private", "https://10.0.0.7/hooks", "url_not_allowed", "10.0.0.7 is a private address"},
		{"plain http", "http://example.com/hooks", "url_not_allowed", "plain http is not allowed; use https"},
		{"space", "https://example.com/a b", "validation_failed", "character ' ' at byte 21 is not allowed in a URL (escape it)"},
		{"unknown host", "https://nowhere.invalid/hooks", "validation_failed", "host nowhere.invalid does not resolve"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, "POST", "/v1/orders", keyA, strings.Replace(valid, "%q", `"`+tt.url+`"`, 1))
			wantProblem(t, resp, body, http.StatusUnprocessableEntity, tt.code, orders.FieldError{Field: "callback_url", Reason: tt.reason})
		})
	}
	resp, body := b.do(t, "GET", "/v1/orders", keyA, "")
	wantStatus(t, resp, body, http.StatusOK)
	if l := decode[server.OrderList](t, body); len(l.Data) != 0 {
		t.Errorf("refused requests stored %d orders", len(l.Data))
	}
	resp, body = b.do(t, "POST", "/v1/orders", keyA, strings.Replace(valid, "%q", `"https://example.com/hooks?t=%20x"`, 1))
	wantStatus(t, resp, body, http.StatusAccepted)
}

// asyncgate dev allows http and loopback callbacks (its receiver is local).
func TestPlaceOrderCallbackURLDevGuard(t *testing.T) {
	t.Parallel()
	a, err := app.New(app.Config{
		Redis: redistest.Shared(t).NewClient(t), API: true, Server: server.Config{APIKeys: apiKeys},
		Webhooks: app.WebhooksConfig{Guard: webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true}},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	b := serve(t, &testBundle{app: a})
	resp, body := b.do(t, "POST", "/v1/orders", keyA, `{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":2,"type":"market","callback_url":"http://127.0.0.1:9/cb"}`)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = b.do(t, "POST", "/v1/orders", keyA, `{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":2,"type":"market","callback_url":"http://169.254.169.254/"}`)
	wantProblem(t, resp, body, http.StatusUnprocessableEntity, "url_not_allowed", orders.FieldError{Field: "callback_url", Reason: "169.254.169.254 is a cloud metadata address"})
}

// Bad text and numbers are refused with the field named, never rewritten:
// invalid UTF-8 and half surrogate pairs (which encoding/json turns into
// U+FFFD), null metadata values (which read as ""), and quantities or
// prices with more precision or magnitude than the downstream can hold.
func TestPlaceOrderRefusesBadTextAndNumbers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const valid = `{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":2,"type":"market"}`
	with := func(field string) string { return strings.Replace(valid, `{`, `{`+field+`,`, 1) }
	fe := func(f, r string) []orders.FieldError { return []orders.FieldError{{Field: f, Reason: r}} }
	for _, tt := range []struct {
		name, body, code string
		status           int
		want             []orders.FieldError
	}{
		{"invalid UTF-8", with("\"client_order_id\":\"c-\xff\""), "malformed_request", 400, nil},
		{"invalid UTF-8 in metadata", with("\"metadata\":{\"note\":\"caf\xe9\"}"), "malformed_request", 400, nil},
		{"invalid UTF-8 in a key", with("\"metadata\":{\"\xc3\":\"x\"}"), "malformed_request", 400, nil},
		{"lone high surrogate", with(`"metadata":{"note":"\ud83d"}`), "malformed_request", 400, nil},
		{"lone low surrogate", with(`"metadata":{"note":"x\ude00y"}`), "malformed_request", 400, nil},
		{"reversed pair", with(`"metadata":{"note":"\ude00\ud83d"}`), "malformed_request", 400, nil},
		{"null metadata value", with(`"metadata":{"note":null}`), "validation_failed", 422, fe("metadata.note", "must be a string, not null")},
		{"smallest double", strings.Replace(valid, `"quantity":2`, `"quantity":5e-324`, 1), "validation_failed", 422, fe("quantity", "must have at most 8 decimal places")},
		{"huge quantity", strings.Replace(valid, `"quantity":2`, `"quantity":1e300`, 1), "validation_failed", 422, fe("quantity", "must be at most 1e+12")},
		{"nine decimals", strings.Replace(valid, `"quantity":2`, `"quantity":0.000000001`, 1), "validation_failed", 422, fe("quantity", "must have at most 8 decimal places")},
		{"too many digits", strings.Replace(valid, `"quantity":2`, `"quantity":0.100000000000000001`, 1), "validation_failed", 422, fe("quantity", "must have at most 8 decimal places")},
		{"sixteen digits", strings.Replace(valid, `"quantity":2`, `"quantity":12345678.12345678`, 1), "validation_failed", 422, fe("quantity", "must have at most 15 significant digits")},
		{"huge price", strings.Replace(valid, `"market"`, `"limit","limit_price":1e300`, 1), "validation_failed", 422, fe("limit_price", "must be at most 1e+12")},
		{"tiny price", strings.Replace(valid, `"market"`, `"limit","limit_price":5e-324`, 1), "validation_failed", 422, fe("limit_price", "must have at most 8 decimal places")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := b.do(t, "POST", "/v1/orders", keyA, tt.body)
			wantProblem(t, resp, body, tt.status, tt.code, tt.want...)
		})
	}
	t.Run("accepted as sent", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "POST", "/v1/orders", keyA, strings.Replace(strings.Replace(valid, `"quantity":2`, `"quantity":0.00000001`, 1),
			`"market"`, `"limit","limit_price":999999999999.125,"metadata":{"note":"\ud83d\ude00 caf\u00e9"}`, 1))
		wantStatus(t, resp, body, http.StatusAccepted)
		o := decode[orders.Order](t, body)
		if o.Quantity != 1e-8 || *o.LimitPrice != 999999999999.125 || o.Metadata["note"] != "😀 café" {
			t.Errorf("stored %v × %v, metadata %q", o.Quantity, *o.LimitPrice, o.Metadata)
		}
	})
	t.Run("null metadata is absent", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, "POST", "/v1/orders", keyA, with(`"metadata":null`))
		wantStatus(t, resp, body, http.StatusAccepted)
		o := decode[orders.Order](t, body)
		resp, body = b.do(t, "GET", "/v1/orders/"+o.ID, keyA, "")
		wantStatus(t, resp, body, http.StatusOK)
		if strings.Contains(string(body), "metadata") {
			t.Errorf("an order placed with \"metadata\": null reads back %s", body)
		}
	})
}

// A webhook endpoint's URL must parse strictly: a space is refused, not
// escaped by the client into another URL.
func TestCreateEndpointRefusesLooseURL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for u, reason := range map[string]string{
		"https://example.com/a b":      "character ' ' at byte 21 is not allowed in a URL (escape it)",
		"https://example.com/in?x=<y>": "character '<' at byte 25 is not allowed in a URL (escape it)",
		"https://example.com/%zz":      "'%' at byte 20 is not followed by two hex digits",
	} {
		resp, body := b.do(t, "POST", "/v1/webhook-endpoints", keyA, jsonOf(t, webhooks.EndpointInput{URL: u}))
		wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", orders.FieldError{Field: "url", Reason: reason})
	}
}

// killingStore kills Redis on the first Create, as an outage would in the
// middle of a request: the idempotency claim is in Redis, the order is not,
// and releasing the claim cannot reach Redis either.
type killingStore struct {
	server.OrderStore
	rs   *redistest.Server
	once sync.Once
}

func (s *killingStore) CreateBound(ctx context.Context, o *orders.Order, b orders.Binding) (*orders.Order, bool, error) {
	s.once.Do(s.rs.Kill)
	return s.OrderStore.CreateBound(ctx, o, b)
}

// After a Redis outage, a request that ended in 503 leaves its
// Idempotency-Key free as soon as Redis is back: the client's honest retry
// is served, not told 409 "in use" until the claim's 30 s TTL runs out.
func TestIdempotencyKeyFreedAfterRedisOutage(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{AOF: true}) // the claim survives the restart
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	store := &killingStore{OrderStore: orders.NewStore(rdb, orders.StoreConfig{}), rs: rs}
	api, err := server.New(server.Config{APIKeys: apiKeys, Logger: slog.New(slog.DiscardHandler)}, // the default 30 s claim TTL
		server.Deps{Orders: store, Queue: contractQueue{}, Redis: okPinger{}, RedisClient: rdb})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(func() { srv.Close(); api.Close() })
	b := &contractBundle{url: srv.URL, rdb: rdb}

	body := jsonOf(t, marketOrder())
	b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "outage").wantCode(t, http.StatusServiceUnavailable, "unavailable")
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	deadline := back.Add(10 * time.Second) // well under the claim's TTL
	for {
		a := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "outage")
		if a.status == http.StatusAccepted {
			if a.header.Get("Idempotent-Replayed") != "" {
				t.Error("the retry after a 503 was a replay")
			}
			t.Logf("the key was free %v after Redis came back", time.Since(back).Round(time.Millisecond))
			break
		}
		if a.status != http.StatusConflict && a.status != http.StatusServiceUnavailable {
			t.Fatalf("retry: %d %s", a.status, a.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry still gets %d %s 10 s after Redis came back", a.status, a.body)
		}
		time.Sleep(100 * time.Millisecond) // poll with a deadline: the release is in the background
	}
}
