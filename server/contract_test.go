package server_test

// Tests of the integrator's contract: API keys, idempotency, rate limits
// and tenant isolation. Like spec_test.go they drive the API over HTTP
// through apitest.Client, on a real redis-server, so that every answer is
// also validated against openapi.yaml.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// contractBundle is an API (no worker) on a fresh Redis database, with the
// real order and key stores; tests may wrap the order store.
type contractBundle struct {
	url    string
	rdb    *redis.Client
	orders *orders.Store
	keys   *apikeys.Store
}

// contractQueue enqueues nothing: these tests run no worker.
type contractQueue struct{}

func (contractQueue) EnqueueOrder(context.Context, string, string, map[string]string) error {
	return nil
}

func (contractQueue) EnqueueCompensation(context.Context, string, string, map[string]string) error {
	return nil
}

func setupContract(t testing.TB, cfg server.Config, wrap func(server.OrderStore) server.OrderStore) *contractBundle {
	t.Helper()
	rdb := redistest.Shared(t).NewClient(t)
	b := &contractBundle{rdb: rdb, orders: orders.NewStore(rdb, orders.StoreConfig{}), keys: apikeys.NewStore(rdb, apikeys.Config{})}
	var store server.OrderStore = b.orders
	if wrap != nil {
		store = wrap(store)
	}
	if cfg.APIKeys == nil {
		cfg.APIKeys = apiKeys
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	// The dashboard's /admin/api/whoami tells which key an admin key is.
	dash, err := admin.New(admin.Config{Logger: cfg.Logger}, admin.Deps{Orders: b.orders, Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	api, err := server.New(cfg, server.Deps{Orders: store, Queue: contractQueue{}, Redis: okPinger{}, Keys: b.keys, RedisClient: rdb, Dashboard: dash})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// answer is a response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// send sends a request with the API key key ("" for none) and the headers
// (name, value pairs), through a client of t's own that validates the
// answer against openapi.yaml. It calls no t.Fatal, for goroutines.
func (b *contractBundle) send(t testing.TB, ctx context.Context, method, path, key, body string, headers ...string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := apitest.Client(t, b.url).Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, got}, err
}

func (b *contractBundle) must(t *testing.T, method, path, key, body string, headers ...string) answer {
	t.Helper()
	a, err := b.send(t, t.Context(), method, path, key, body, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
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

func (b *contractBundle) countOrders(t *testing.T, key string) int {
	t.Helper()
	a := b.must(t, "GET", "/v1/orders?limit=200", key, "")
	a.want(t, http.StatusOK)
	return len(decode[server.OrderList](t, a.body).Data)
}

func TestIdempotencyConcurrentRequests(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	body := jsonOf(t, marketOrder())
	const n = 50
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			a, err := b.send(t, t.Context(), "POST", "/v1/orders", keyA, body, "Idempotency-Key", "concurrent-1")
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			answers[i] = a
		})
	}
	close(start)
	wg.Wait()

	var ids []string
	var firsts, replays, inFlight int
	for i, a := range answers {
		switch a.status {
		case http.StatusAccepted:
			ids = append(ids, decode[orders.Order](t, a.body).ID)
			if a.header.Get("Idempotent-Replayed") == "true" {
				replays++
			} else {
				firsts++
			}
		case http.StatusConflict:
			if p := decode[server.Problem](t, a.body); p.Code != "idempotency_key_in_use" || a.header.Get("Retry-After") == "" {
				t.Errorf("request %d: 409 %s (Retry-After %q), want idempotency_key_in_use with Retry-After", i, p.Code, a.header.Get("Retry-After"))
			}
			inFlight++
		default:
			t.Errorf("request %d: status %d: %s", i, a.status, a.body)
		}
	}
	t.Logf("%d first answer, %d replays, %d in flight", firsts, replays, inFlight)
	if firsts != 1 {
		t.Errorf("%d requests were answered as the first, want exactly 1", firsts)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("order ids differ: %s and %s", ids[0], id)
		}
	}
	if got := b.countOrders(t, keyA); got != 1 {
		t.Errorf("%d orders stored, want 1", got)
	}
	// Once the first is done, every retry gets its answer.
	a := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "concurrent-1")
	a.want(t, http.StatusAccepted)
	if id := decode[orders.Order](t, a.body).ID; len(ids) > 0 && id != ids[0] {
		t.Errorf("replay has order %s, want %s", id, ids[0])
	}
}

func TestIdempotencyReplay(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	req := marketOrder()
	req.Metadata = map[string]string{"b": "2", "a": "1"}
	body := jsonOf(t, req)
	first := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "replay-1")
	first.want(t, http.StatusAccepted)
	if v := first.header.Get("Idempotent-Replayed"); v != "" {
		t.Errorf("first answer has Idempotent-Replayed %q", v)
	}
	o := decode[orders.Order](t, first.body)

	// The same body, even with other white space and key order, is the
	// same request.
	reordered := `{ "type":"market", "quantity":2, "side":"buy", "symbol":"ACME", "account_id":"acc-1",
	  "metadata": {"a":"1","b":"2"} }`
	for _, again := range []string{body, reordered} {
		a := b.must(t, "POST", "/v1/orders", keyA, again, "Idempotency-Key", "replay-1")
		a.want(t, http.StatusAccepted)
		if !bytes.Equal(a.body, first.body) {
			t.Errorf("replay body differs:\n%s\nwant\n%s", a.body, first.body)
		}
		for _, h := range []string{"Location", "Retry-After", "Content-Type"} {
			if a.header.Get(h) != first.header.Get(h) {
				t.Errorf("replay %s %q, want %q", h, a.header.Get(h), first.header.Get(h))
			}
		}
		if a.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay without Idempotent-Replayed: true")
		}
		if a.header.Get("X-Request-Id") == first.header.Get("X-Request-Id") {
			t.Errorf("replay has the first request's X-Request-Id")
		}
	}

	// Another body, or another path, with the key: 422.
	changed := marketOrder()
	changed.Quantity = 3
	b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, changed), "Idempotency-Key", "replay-1").wantCode(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	b.must(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", "Idempotency-Key", "replay-1").wantCode(t, http.StatusUnprocessableEntity, "idempotency_key_reused")

	// Keys are scoped per tenant: tenant B's replay-1 is its own.
	other := b.must(t, "POST", "/v1/orders", keyB, body, "Idempotency-Key", "replay-1")
	other.want(t, http.StatusAccepted)
	if id := decode[orders.Order](t, other.body).ID; id == o.ID || other.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("tenant B got tenant A's answer")
	}
	if got := b.countOrders(t, keyA); got != 1 {
		t.Errorf("tenant A has %d orders, want 1", got)
	}

	// Cancel is a POST too: its 202 is replayed.
	c1 := b.must(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", "Idempotency-Key", "cancel-1")
	c1.want(t, http.StatusAccepted)
	c2 := b.must(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "", "Idempotency-Key", "cancel-1")
	c2.want(t, http.StatusAccepted)
	if c2.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(c1.body, c2.body) {
		t.Errorf("cancel replay: Idempotent-Replayed %q, same body %t", c2.header.Get("Idempotent-Replayed"), bytes.Equal(c1.body, c2.body))
	}
}

// TestClientOrderIDWithIdempotencyKeys: a client_order_id stays unique per
// tenant whatever the idempotency keys, and the 409 is replayed.
func TestClientOrderIDWithIdempotencyKeys(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	req := marketOrder()
	req.ClientOrderID = "coid-1"
	first := b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, req), "Idempotency-Key", "k1")
	first.want(t, http.StatusAccepted)
	dup := b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, req), "Idempotency-Key", "k2")
	dup.wantCode(t, http.StatusConflict, "duplicate_client_order_id")
	if got, want := dup.header.Get("Location"), first.header.Get("Location"); got != want {
		t.Errorf("409 Location %q, want %q", got, want)
	}
	again := b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, req), "Idempotency-Key", "k2")
	again.wantCode(t, http.StatusConflict, "duplicate_client_order_id")
	if again.header.Get("Idempotent-Replayed") != "true" || again.header.Get("Location") != first.header.Get("Location") {
		t.Errorf("replayed 409: Idempotent-Replayed %q, Location %q", again.header.Get("Idempotent-Replayed"), again.header.Get("Location"))
	}
	// Another tenant may use the same client_order_id.
	b.must(t, "POST", "/v1/orders", keyB, jsonOf(t, req), "Idempotency-Key", "k1").want(t, http.StatusAccepted)
	if got := b.countOrders(t, keyA); got != 1 {
		t.Errorf("tenant A has %d orders, want 1", got)
	}
}

func TestIdempotencyKeyInvalid(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	body := jsonOf(t, marketOrder())
	for _, tt := range []struct {
		name    string
		headers []string
	}{
		{"empty", []string{"Idempotency-Key", ""}},
		{"too long", []string{"Idempotency-Key", strings.Repeat("k", 256)}},
		{"not ASCII", []string{"Idempotency-Key", "clé"}},
		{"two values", []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b.must(t, "POST", "/v1/orders", keyA, body, tt.headers...).wantCode(t, http.StatusBadRequest, "malformed_request")
		})
	}
	b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", strings.Repeat("k", 255)).want(t, http.StatusAccepted)
	if got := b.countOrders(t, keyA); got != 1 {
		t.Errorf("%d orders, want 1 (the invalid keys must store nothing)", got)
	}
}

// TestIdempotencyValidationNotRecorded: a request refused by validation
// leaves the key free, so the client can fix the body and retry with it.
func TestIdempotencyValidationNotRecorded(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{MaxBodyBytes: 1024}, nil)
	bad := marketOrder()
	bad.Quantity = -1
	b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, bad), "Idempotency-Key", "fix-me").wantCode(t, http.StatusUnprocessableEntity, "validation_failed")
	b.must(t, "POST", "/v1/orders", keyA, `{"account_id":`, "Idempotency-Key", "fix-me").wantCode(t, http.StatusBadRequest, "malformed_request")
	b.must(t, "POST", "/v1/orders", keyA, `{"pad":"`+strings.Repeat("x", 2000)+`"}`, "Idempotency-Key", "fix-me").wantCode(t, http.StatusRequestEntityTooLarge, "body_too_large")
	b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, marketOrder()), "Idempotency-Key", "fix-me").want(t, http.StatusAccepted)
}

// flakyStore fails Create with an error of Redis being away while failing is set.
type flakyStore struct {
	server.OrderStore
	failing atomic.Bool
}

func (s *flakyStore) CreateBound(ctx context.Context, o *orders.Order, b orders.Binding) (*orders.Order, bool, error) {
	if s.failing.Load() {
		return nil, false, redis.ErrPoolTimeout
	}
	return s.OrderStore.CreateBound(ctx, o, b)
}

// TestIdempotency5xxNotRecorded: after a 5xx the client may retry with the same key.
func TestIdempotency5xxNotRecorded(t *testing.T) {
	t.Parallel()
	var fs *flakyStore
	b := setupContract(t, server.Config{}, func(s server.OrderStore) server.OrderStore {
		fs = &flakyStore{OrderStore: s}
		return fs
	})
	body := jsonOf(t, marketOrder())
	fs.failing.Store(true)
	b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "retry-me").wantCode(t, http.StatusServiceUnavailable, "unavailable")
	fs.failing.Store(false)
	a := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "retry-me")
	a.want(t, http.StatusAccepted)
	if a.header.Get("Idempotent-Replayed") != "" {
		t.Error("the retry after a 5xx was a replay")
	}
}

// gatedStore holds Create until its gate gives way.
type gatedStore struct {
	server.OrderStore
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) CreateBound(ctx context.Context, o *orders.Order, b orders.Binding) (*orders.Order, bool, error) {
	s.entered <- struct{}{}
	<-s.gate
	return s.OrderStore.CreateBound(ctx, o, b)
}

// TestIdempotencyInFlight: while the first request runs, the key answers
// 409; a claim whose request never finishes (its process died) expires
// after IdempotencyClaimTTL.
func TestIdempotencyInFlight(t *testing.T) {
	t.Parallel()
	gs := &gatedStore{entered: make(chan struct{}, 10), gate: make(chan struct{})}
	b := setupContract(t, server.Config{IdempotencyClaimTTL: 300 * time.Millisecond}, func(s server.OrderStore) server.OrderStore {
		gs.OrderStore = s
		return gs
	})
	body := jsonOf(t, marketOrder())
	firstDone := make(chan answer, 1)
	go func() {
		a, err := b.send(t, context.Background(), "POST", "/v1/orders", keyA, body, "Idempotency-Key", "slow")
		if err != nil {
			t.Error(err)
		}
		firstDone <- a
	}()
	<-gs.entered // the first request holds the claim, in the handler
	p := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "slow")
	p.wantCode(t, http.StatusConflict, "idempotency_key_in_use")
	if p.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", p.header.Get("Retry-After"))
	}
	// Another body is refused even while the first is in flight.
	other := marketOrder()
	other.Symbol = "OTHER"
	b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, other), "Idempotency-Key", "slow").wantCode(t, http.StatusUnprocessableEntity, "idempotency_key_reused")

	// The first request is stuck past the claim's TTL, as if its process
	// had died: the key is free again.
	deadline := time.Now().Add(10 * time.Second)
	var second chan answer
	for second == nil {
		if time.Now().After(deadline) {
			t.Fatal("the claim of a stuck request did not expire")
		}
		time.Sleep(50 * time.Millisecond) // poll: the expiry is Redis's
		exists, err := b.rdb.Exists(t.Context(), "ag:{tenant-a}:idem:slow").Result()
		if err != nil {
			t.Fatal(err)
		}
		if exists == 0 {
			second = make(chan answer, 1)
			go func() {
				a, err := b.send(t, context.Background(), "POST", "/v1/orders", keyA, body, "Idempotency-Key", "slow")
				if err != nil {
					t.Error(err)
				}
				second <- a
			}()
		}
	}
	<-gs.entered // the second request runs the handler
	close(gs.gate)
	a1, a2 := <-firstDone, <-second
	a1.want(t, http.StatusAccepted)
	a2.want(t, http.StatusAccepted)
	// The second request recorded its answer; the first, whose claim was
	// lost, did not overwrite it.
	a3 := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "slow")
	a3.want(t, http.StatusAccepted)
	if !bytes.Equal(a3.body, a2.body) || a3.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay is not the second answer:\n%s\nwant\n%s", a3.body, a2.body)
	}
}

// keyB2 is a second static key of tenant B, with its own rate limit.
const keyB2 = "key-of-tenant-b-second-0123"

func TestRateLimit(t *testing.T) {
	t.Parallel()
	keys := map[string]string{keyA: "tenant-a", keyB: "tenant-b", keyB2: "tenant-b"}
	b := setupContract(t, server.Config{
		APIKeys:          keys,
		RateLimit:        server.RateLimit{Rate: 1, Period: time.Second, Burst: 3},
		TenantRateLimits: map[string]server.RateLimit{"tenant-a": {}}, // no limit
	}, nil)
	body := jsonOf(t, marketOrder())

	// The burst passes, with the headers counting down.
	for i := range 3 {
		a := b.must(t, "GET", "/v1/orders", keyB, "")
		a.want(t, http.StatusOK)
		if got, want := a.header.Get("RateLimit-Limit"), "3"; got != want {
			t.Errorf("request %d: RateLimit-Limit %q, want %q", i, got, want)
		}
		if got, want := a.header.Get("RateLimit-Remaining"), strconv.Itoa(2-i); got != want {
			t.Errorf("request %d: RateLimit-Remaining %q, want %q", i, got, want)
		}
		if r, err := strconv.Atoi(a.header.Get("RateLimit-Reset")); err != nil || r < 1 || r > 3 {
			t.Errorf("request %d: RateLimit-Reset %q, want 1-3 s", i, a.header.Get("RateLimit-Reset"))
		}
	}
	// Over it: 429, and a POST with an Idempotency-Key leaves the key free.
	limited := b.must(t, "POST", "/v1/orders", keyB, body, "Idempotency-Key", "after-429")
	limited.wantCode(t, http.StatusTooManyRequests, "rate_limited")
	retry, err := strconv.Atoi(limited.header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 1 {
		t.Errorf("Retry-After %q, want 1 (one request per second)", limited.header.Get("Retry-After"))
	}
	if limited.header.Get("RateLimit-Remaining") != "0" || limited.header.Get("RateLimit-Limit") != "3" || limited.header.Get("RateLimit-Reset") == "" {
		t.Errorf("429 headers: %v", limited.header)
	}
	limitedAt := time.Now()

	// Another key of the tenant has its own budget; tenant A has no limit.
	b.must(t, "GET", "/v1/orders", keyB2, "").want(t, http.StatusOK)
	for range 5 {
		a := b.must(t, "GET", "/v1/orders", keyA, "")
		a.want(t, http.StatusOK)
		if a.header.Get("RateLimit-Limit") != "" {
			t.Errorf("an unlimited tenant got RateLimit-Limit %q", a.header.Get("RateLimit-Limit"))
		}
	}
	// The operational endpoints are not limited.
	for range 5 {
		a := b.must(t, "GET", "/healthz", "", "")
		a.want(t, http.StatusOK)
		if a.header.Get("RateLimit-Limit") != "" {
			t.Error("/healthz has rate limit headers")
		}
	}

	// After Retry-After, the client's retry succeeds, with the same key.
	deadline := limitedAt.Add(time.Duration(retry)*time.Second + 2*time.Second)
	for {
		a := b.must(t, "POST", "/v1/orders", keyB, body, "Idempotency-Key", "after-429")
		if a.status == http.StatusAccepted {
			if waited := time.Since(limitedAt); waited > time.Duration(retry)*time.Second+time.Second {
				t.Errorf("the retry succeeded only after %v, Retry-After was %d s", waited, retry)
			}
			break
		}
		a.wantCode(t, http.StatusTooManyRequests, "rate_limited")
		if time.Now().After(deadline) {
			t.Fatalf("still limited %v after the 429 (Retry-After %d)", time.Since(limitedAt), retry)
		}
		time.Sleep(100 * time.Millisecond) // poll with a deadline: the GCRA clock is Redis's
	}
}

// TestTenantIsolation: every /v1 route, given another tenant's order, answers
// as if it did not exist.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	a := b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, marketOrder()))
	a.want(t, http.StatusAccepted)
	id := decode[orders.Order](t, a.body).ID
	for _, tt := range []struct {
		method, path, body string
	}{
		{"GET", "/v1/orders/" + id, ""},
		{"GET", "/v1/orders/" + id + "?wait=1s", ""},
		{"GET", "/v1/orders/" + id + "/events", ""},
		{"POST", "/v1/orders/" + id + "/cancel", ""},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			b.must(t, tt.method, tt.path, keyB, tt.body).wantCode(t, http.StatusNotFound, "not_found")
			b.must(t, tt.method, tt.path, keyB, tt.body, "Idempotency-Key", "iso-"+tt.method+tt.path).wantCode(t, http.StatusNotFound, "not_found")
		})
	}
	t.Run("GET /v1/orders", func(t *testing.T) {
		for _, q := range []string{"", "?status=pending", "?limit=1"} {
			a := b.must(t, "GET", "/v1/orders"+q, keyB, "")
			a.want(t, http.StatusOK)
			if n := len(decode[server.OrderList](t, a.body).Data); n != 0 {
				t.Errorf("tenant B lists %d orders with %q", n, q)
			}
		}
	})
	// Tenant A's order is untouched.
	got := b.must(t, "GET", "/v1/orders/"+id, keyA, "")
	got.want(t, http.StatusOK)
	if o := decode[orders.Order](t, got.body); o.CancelRequested || o.Status != orders.Pending {
		t.Errorf("tenant B changed tenant A's order: %+v", o)
	}
}

func TestAPIKeysFromStore(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{KeyCacheTTL: 200 * time.Millisecond}, nil)
	ctx := t.Context()
	k, secret, err := b.keys.Create(ctx, apikeys.CreateParams{Tenant: "acme", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	opsKey, adminSecret, err := b.keys.Create(ctx, apikeys.CreateParams{Tenant: "ops", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	b.must(t, "POST", "/v1/orders", secret.Reveal(), jsonOf(t, marketOrder())).want(t, http.StatusAccepted)
	if n := b.countOrders(t, secret.Reveal()); n != 1 {
		t.Errorf("the key's tenant has %d orders, want 1", n)
	}
	if n := b.countOrders(t, keyA); n != 0 {
		t.Errorf("tenant-a sees %d of acme's orders", n)
	}

	// Admin routes: admin keys only.
	b.must(t, "GET", "/admin/api/whoami", secret.Reveal(), "").wantCode(t, http.StatusForbidden, "forbidden")
	b.must(t, "GET", "/admin/api/whoami", keyA, "").wantCode(t, http.StatusForbidden, "forbidden")
	b.must(t, "GET", "/admin/api/whoami", "", "").wantCode(t, http.StatusUnauthorized, "unauthorized")
	w := b.must(t, "GET", "/admin/api/whoami", adminSecret.Reveal(), "")
	w.want(t, http.StatusOK)
	if diff := cmp.Diff(admin.Whoami{KeyID: opsKey.ID, Tenant: "ops", Admin: true}, decode[admin.Whoami](t, w.body)); diff != "" {
		t.Errorf("whoami (-want +got):\n%s", diff)
	}

	// The last use is recorded, in the background.
	waitFor(t, 5*time.Second, "last use recorded", func() bool {
		got, err := b.keys.Lookup(ctx, k.Hash)
		return err == nil && !got.LastUsedAt.IsZero()
	})

	// Revoked: refused once the cache entry expires.
	if err := b.keys.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	waitFor(t, 5*time.Second, "revoked key refused", func() bool {
		a := b.must(t, "GET", "/v1/orders", secret.Reveal(), "")
		return a.status == http.StatusUnauthorized
	})
	if d := time.Since(revokedAt); d > time.Second {
		t.Errorf("the revoked key worked for %v, the cache TTL is 200ms", d)
	}
	a := b.must(t, "GET", "/v1/orders", secret.Reveal(), "")
	a.wantCode(t, http.StatusUnauthorized, "unauthorized")
	if a.header.Get("WWW-Authenticate") != `Bearer realm="asyncgate", error="invalid_token"` {
		t.Errorf("WWW-Authenticate %q", a.header.Get("WWW-Authenticate"))
	}
}

func TestAdminKeysFromConfig(t *testing.T) {
	t.Parallel()
	const adminKey = "admin-key-0123456789abcdef"
	b := setupContract(t, server.Config{AdminKeys: map[string]string{adminKey: "ops"}}, nil)
	w := b.must(t, "GET", "/admin/api/whoami", adminKey, "")
	w.want(t, http.StatusOK)
	if got := decode[admin.Whoami](t, w.body); got.Tenant != "ops" || !got.Admin || !strings.HasPrefix(got.KeyID, "config:") {
		t.Errorf("whoami %+v", got)
	}
	b.must(t, "GET", "/admin/api/whoami", keyB, "").wantCode(t, http.StatusForbidden, "forbidden")
	// An admin key is also a key of its tenant.
	b.must(t, "GET", "/v1/orders", adminKey, "").want(t, http.StatusOK)
}

func TestServerNeedsKeys(t *testing.T) {
	t.Parallel()
	_, err := server.New(server.Config{}, server.Deps{Orders: brokenStore{}, Redis: okPinger{}})
	if err == nil || !strings.Contains(err.Error(), "no API keys") {
		t.Errorf("New without keys: %v", err)
	}
	_, err = server.New(server.Config{APIKeys: apiKeys, RateLimit: server.RateLimit{Rate: -1}}, server.Deps{})
	if err == nil {
		t.Error("New with a negative rate limit: no error")
	}
}

func TestDocs(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	a := b.must(t, "GET", "/docs", "", "")
	a.want(t, http.StatusOK)
	if ct := a.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := string(a.body)
	for _, want := range []string{"placeOrder", "getOrder", "listOrders", "cancelOrder", `id="schema-Order"`, `id="schema-Problem"`, "Idempotency-Key", `href="/openapi.yaml"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not mention %s", want)
		}
	}
	// Nothing comes from elsewhere.
	for _, bad := range []string{"<script", " src=", "@import", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page has %q", bad)
		}
	}
	if len(a.body) > 1<<20 {
		t.Errorf("the page is %d bytes", len(a.body))
	}
}

// waitFor polls cond until it holds or the deadline passes.
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
