package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

const apiKey = "client-test-key-0123456789abcdef"

// limitedKey's tenant may place 2 orders a second.
const limitedKey = "client-limited-key-0123456789abcdef"

// serverURL is the API of a real asyncgate (API and worker, real Redis,
// simulated downstreams) that TestMain starts for the tests and examples.
var serverURL string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	rs, err := redistest.StartServer(redistest.Options{}, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer rs.Close()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()

	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	defer simSrv.Close()
	down := downstream.Config{BaseURL: simSrv.URL, Timeout: 500 * time.Millisecond, Budget: 2 * time.Second,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}
	a, err := app.New(app.Config{
		Redis: rdb, API: true, Worker: true,
		Server: server.Config{
			APIKeys:          map[string]string{apiKey: "acme", limitedKey: "limited"},
			TenantRateLimits: map[string]server.RateLimit{"limited": {Rate: 2, Period: time.Second, Burst: 2}},
		},
		Webhooks:   app.WebhooksConfig{Guard: webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true}},
		Portfolio:  down,
		Execution:  down,
		Saga:       jobs.SagaConfig{LeaseTTL: 5 * time.Second, RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		Reconciler: jobs.ReconcilerConfig{Interval: time.Hour},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := a.Start(context.Background(), false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := httptest.NewServer(a.Handler())
	serverURL = srv.URL
	defer func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	}()
	return m.Run()
}

func newClient(t *testing.T, base string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(base, apiKey, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func marketOrder(account string) client.OrderRequest {
	return client.OrderRequest{AccountId: account, Symbol: "AAPL", Side: client.Buy, Quantity: 10, Type: client.Market}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLifecycle(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)

	o, err := c.PlaceOrder(ctx, marketOrder("acc-life"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != client.OrderStatusPending {
		t.Fatalf("placed status = %q, want pending", o.Status)
	}
	done, err := c.WaitForOrder(ctx, o.Id)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != client.OrderStatusExecuted || done.Fill == nil {
		t.Fatalf("waited order = %+v, want executed with a fill", done)
	}
	got, err := c.GetOrder(ctx, o.Id)
	if err != nil || got.Status != client.OrderStatusExecuted {
		t.Fatalf("GetOrder = %+v, %v", got, err)
	}

	// Cancelling an executed order is too late: a typed 409 problem.
	_, err = c.CancelOrder(ctx, o.Id)
	var p *client.Problem
	if !errors.As(err, &p) {
		t.Fatalf("CancelOrder error = %v, want a *client.Problem", err)
	}
	if p.Status != http.StatusConflict || p.Code != client.ProblemCodeTooLate {
		t.Fatalf("problem = %+v, want 409 too_late", p)
	}

	evs, err := c.Events(ctx, o.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 || evs[0].Type != client.EventTypeOrderCreated || evs[len(evs)-1].Type != client.EventTypeOrderExecuted {
		t.Fatalf("events = %+v, want order.created … order.executed", evs)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}

	// An unknown order is a 404 problem.
	_, err = c.GetOrder(ctx, client.OrderId{1})
	if !errors.As(err, &p) || p.Status != http.StatusNotFound || p.Code != client.ProblemCodeNotFound {
		t.Fatalf("GetOrder(unknown) = %v, want 404 not_found", err)
	}
}

func TestOrdersIterator(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	placed := map[client.OrderId]bool{}
	for range 7 {
		o, err := c.PlaceOrder(ctx, marketOrder("acc-iter"))
		if err != nil {
			t.Fatal(err)
		}
		placed[o.Id] = true
	}
	seen := map[client.OrderId]bool{}
	for o, err := range c.Orders(ctx, client.OrderFilter{PageSize: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		if seen[o.Id] {
			t.Fatalf("order %s listed twice", o.Id)
		}
		seen[o.Id] = true
	}
	for id := range placed {
		if !seen[id] {
			t.Errorf("order %s not listed", id)
		}
	}

	// Breaking out of the loop stops the iteration.
	n := 0
	for _, err := range c.Orders(ctx, client.OrderFilter{PageSize: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Fatalf("iterated %d, want 3", n)
	}

	// A bad filter yields the problem once.
	var errs int
	for _, err := range c.Orders(ctx, client.OrderFilter{Status: "bogus"}) {
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != http.StatusUnprocessableEntity {
			t.Fatalf("err = %v, want a 422 problem", err)
		}
		errs++
	}
	if errs != 1 {
		t.Fatalf("yielded %d errors, want 1", errs)
	}
}

func TestCancelPending(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	o, err := c.PlaceOrder(ctx, marketOrder("acc-cancel"))
	if err != nil {
		t.Fatal(err)
	}
	// The order may execute before the cancel lands: then the cancel is a
	// 409 too_late problem and the order ends executed; else it ends cancelled
	// (or executed, when the cancel came while the execution ran).
	_, cancelErr := c.CancelOrder(ctx, o.Id)
	var p *client.Problem
	if cancelErr != nil && !(errors.As(cancelErr, &p) && p.Code == client.ProblemCodeTooLate) {
		t.Fatal(cancelErr)
	}
	done, err := c.WaitForOrder(ctx, o.Id)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cancelErr != nil && done.Status != client.OrderStatusExecuted:
		t.Fatalf("status = %q after too_late, want executed", done.Status)
	case cancelErr == nil && done.Status != client.OrderStatusCancelled && done.Status != client.OrderStatusExecuted:
		t.Fatalf("status = %q after a cancel, want cancelled", done.Status)
	}
}

func TestValidationProblem(t *testing.T) {
	ctx := ctxFor(t)
	c := newClient(t, serverURL)
	req := marketOrder("acc-bad")
	req.Quantity = -1
	_, err := c.PlaceOrder(ctx, req)
	var p *client.Problem
	if !errors.As(err, &p) {
		t.Fatalf("err = %v, want a *client.Problem", err)
	}
	if p.Status != http.StatusUnprocessableEntity || p.Code != client.ProblemCodeValidationFailed {
		t.Fatalf("problem = %+v, want 422 validation_failed", p)
	}
	if p.Errors == nil || len(*p.Errors) == 0 {
		t.Fatalf("problem has no field errors: %+v", p)
	}
	if p.Error() == "" {
		t.Fatal("empty Error()")
	}
}

func TestUnauthorizedProblem(t *testing.T) {
	c, err := client.New(serverURL, "wrong-key-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetOrder(ctxFor(t), client.OrderId{1})
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want a 401 problem", err)
	}
}

// flaky answers the first POST /v1/orders with 503 and Retry-After, then
// forwards everything to the real server, noting the Idempotency-Keys.
type flaky struct {
	mu    sync.Mutex
	keys  []string
	posts int
	proxy *httputil.ReverseProxy
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/orders" {
		f.mu.Lock()
		f.posts++
		first := f.posts == 1
		f.keys = append(f.keys, r.Header.Get("Idempotency-Key"))
		f.mu.Unlock()
		if first {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"type":"https://asyncgate.dev/problems/unavailable","title":"Service unavailable","status":503,"code":"unavailable"}`)
			return
		}
	}
	f.proxy.ServeHTTP(w, r)
}

func TestPlaceOrderRetriesWithSameKey(t *testing.T) {
	ctx := ctxFor(t)
	u, _ := url.Parse(serverURL)
	f := &flaky{proxy: httputil.NewSingleHostReverseProxy(u)}
	proxy := httptest.NewServer(f)
	t.Cleanup(proxy.Close)

	c := newClient(t, proxy.URL, client.WithRetry(3, 10*time.Millisecond, 5*time.Second))
	start := time.Now()
	o, err := c.PlaceOrder(ctx, marketOrder("acc-retry"))
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("retried after %v, want Retry-After's 1s", el)
	}
	f.mu.Lock()
	keys := f.keys
	f.mu.Unlock()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("Idempotency-Keys = %q, want the same key twice", keys)
	}
	if _, err := c.WaitForOrder(ctx, o.Id); err != nil {
		t.Fatal(err)
	}

	// A second logical call gets a key of its own.
	if _, err := c.PlaceOrder(ctx, marketOrder("acc-retry")); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != 3 || f.keys[2] == f.keys[0] {
		t.Fatalf("Idempotency-Keys = %q, want a new key for a new call", f.keys)
	}
}

func TestRetryBounded(t *testing.T) {
	var calls int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"type":"https://asyncgate.dev/problems/rate_limited","title":"Rate limited","status":429,"code":"rate_limited"}`)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, client.WithRetry(3, time.Millisecond, time.Second))
	_, err := c.PlaceOrder(ctxFor(t), marketOrder("acc-x"))
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != client.ProblemCodeRateLimited {
		t.Fatalf("err = %v, want the 429 problem", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Fatalf("%d attempts, want 3", calls)
	}

	// A Retry-After beyond the context's deadline is not waited for.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv2.Close)
	c2 := newClient(t, srv2.URL, client.WithRetry(5, time.Millisecond, 10*time.Minute))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c2.GetOrder(ctx, client.OrderId{1})
	if !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want the 503 problem", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("waited for a Retry-After past the deadline")
	}
}

func TestRetryNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // connection refused from now on
	c := newClient(t, base, client.WithRetry(2, time.Millisecond, time.Second))
	_, err := c.PlaceOrder(ctxFor(t), marketOrder("acc-x"))
	var p *client.Problem
	if err == nil || errors.As(err, &p) {
		t.Fatalf("err = %v, want a network error", err)
	}
}

func TestVerifyWebhook(t *testing.T) {
	secret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"order.executed"}`)
	h := webhooks.Headers("msg_1", time.Now(), body, secret)
	if err := client.VerifyWebhook(secret.String(), h, body); err != nil {
		t.Fatalf("VerifyWebhook of asyncgate's own signature: %v", err)
	}
	if err := client.VerifyWebhook(secret.String(), h, []byte(`{"type":"order.failed"}`)); err == nil {
		t.Fatal("VerifyWebhook accepted a changed body")
	}
	if err := client.VerifyWebhook("not a secret", h, body); err == nil {
		t.Fatal("VerifyWebhook accepted a bad secret")
	}
}

func TestNewRejectsEmpty(t *testing.T) {
	if _, err := client.New("", apiKey); err == nil {
		t.Fatal("New accepted an empty base URL")
	}
	if _, err := client.New(serverURL, ""); err == nil {
		t.Fatal("New accepted an empty key")
	}
}

// countingDoer counts the answers with each status.
type countingDoer struct {
	mu     sync.Mutex
	status map[int]int
}

func (d *countingDoer) Do(r *http.Request) (*http.Response, error) {
	res, err := http.DefaultClient.Do(r)
	if err == nil {
		d.mu.Lock()
		d.status[res.StatusCode]++
		d.mu.Unlock()
	}
	return res, err
}

// The server's real rate limiter answers 429 with Retry-After; PlaceOrder
// waits and succeeds.
func TestPlaceOrderRidesOutTheRealRateLimit(t *testing.T) {
	t.Parallel()
	doer := &countingDoer{status: map[int]int{}}
	c, err := client.New(serverURL, limitedKey, client.WithHTTPDoer(doer))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := c.PlaceOrder(ctx, client.OrderRequest{AccountId: "acc-rl", Symbol: "AAPL", Side: client.Buy, Quantity: 1, Type: client.Market}); err != nil {
			t.Fatalf("order %d: %v", i, err)
		}
	}
	doer.mu.Lock()
	defer doer.mu.Unlock()
	if doer.status[http.StatusTooManyRequests] == 0 || doer.status[http.StatusAccepted] != 5 {
		t.Fatalf("answers by status = %v; want some 429s and five 202s", doer.status)
	}
}

// VerifyWebhook accepts what asyncgate really delivers, and nothing tampered.
func TestVerifyWebhookAcceptsARealDelivery(t *testing.T) {
	t.Parallel()
	type delivery struct {
		header http.Header
		body   []byte
	}
	got := make(chan delivery, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{r.Header.Clone(), b}
	}))
	defer recv.Close()
	req, _ := http.NewRequest("POST", serverURL+"/v1/webhook-endpoints",
		strings.NewReader(`{"url":"`+recv.URL+`/hook","events":["order.executed"]}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ep struct{ Secret string }
	json.NewDecoder(res.Body).Decode(&ep)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("register endpoint: %d, secret %q", res.StatusCode, ep.Secret)
	}
	c, err := client.New(serverURL, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.PlaceOrder(ctx, client.OrderRequest{AccountId: "acc-wh", Symbol: "AAPL", Side: client.Buy, Quantity: 1, Type: client.Market}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if err := client.VerifyWebhook(ep.Secret, d.header, d.body); err != nil {
			t.Fatalf("a real delivery does not verify: %v", err)
		}
		tampered := append([]byte{}, d.body...)
		tampered[len(tampered)/2] ^= 1
		if err := client.VerifyWebhook(ep.Secret, d.header, tampered); err == nil {
			t.Fatal("a tampered delivery verifies")
		}
	case <-ctx.Done():
		t.Fatal("no delivery arrived")
	}
}
