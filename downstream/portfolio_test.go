package downstream

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestPortfolio(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, contentType, key, tenant, order string }
	var (
		mu       sync.Mutex
		requests []seen
	)
	record := func(s *sim.Sim) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			requests = append(requests, seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Idempotency-Key"),
				r.Header.Get(HeaderTenant), r.Header.Get(HeaderOrder)})
			mu.Unlock()
			s.ServeHTTP(w, r)
		})
	}
	tb := setup(t, record, nil)
	ctx := t.Context()
	tb.sim.SetBalance("acc 1", 500)

	v, err := tb.portfolio.Get(ctx, "acme", "acc 1")
	if err != nil {
		t.Fatal(err)
	}
	want := View{AccountID: "acc 1", Cash: 500, Available: 500, AsOf: fixedNow}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}

	r := Reservation{Tenant: "acme", OrderID: "o1", ID: "r1", AccountID: "acc 1", Amount: 200}
	for range 2 {
		if err := tb.portfolio.Reserve(ctx, r); err != nil {
			t.Fatalf("Reserve: %v", err)
		}
	}
	if !tb.sim.Reserved("r1") || tb.sim.Stats().Reservations != 1 {
		t.Errorf("Reserved = %v, Reservations = %d", tb.sim.Reserved("r1"), tb.sim.Stats().Reservations)
	}
	if v, _ := tb.portfolio.Get(ctx, "acme", "acc 1"); v.Reserved != 200 || v.Available != 300 {
		t.Errorf("after Reserve: %+v", v)
	}

	for _, id := range []string{"r1", "r1", "never reserved"} {
		if err := tb.portfolio.Release(ctx, ReleaseRequest{Tenant: "acme", OrderID: "o1", ReservationID: id}); err != nil {
			t.Fatalf("Release(%s): %v", id, err)
		}
	}
	if !tb.sim.Released("r1") || tb.sim.Stats().Releases != 1 {
		t.Errorf("Released = %v, Releases = %d", tb.sim.Released("r1"), tb.sim.Stats().Releases)
	}

	wantSeen := []seen{
		{"GET", "/portfolios/acc 1", "", "", "acme", ""},
		{"POST", "/reservations", "application/json", "r1", "acme", "o1"},
		{"POST", "/reservations", "application/json", "r1", "acme", "o1"},
		{"GET", "/portfolios/acc 1", "", "", "acme", ""},
		{"POST", "/reservations/r1/release", "", "r1", "acme", "o1"},
		{"POST", "/reservations/r1/release", "", "r1", "acme", "o1"},
		{"POST", "/reservations/never reserved/release", "", "never reserved", "acme", "o1"},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(wantSeen, requests, cmp.AllowUnexported(seen{})); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestReserveInsufficientFunds(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	tb.sim.SetBalance("poor", 10)

	err := tb.portfolio.Reserve(t.Context(), Reservation{Tenant: "acme", OrderID: "o1", ID: "r1", AccountID: "poor", Amount: 11})
	if !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("err = %v, want ErrInsufficientFunds", err)
	}
	if IsTransient(err) {
		t.Error("insufficient funds is transient")
	}
	if got := tb.sim.Stats().ReserveRequests; got != 1 {
		t.Errorf("ReserveRequests = %d, want 1: a business answer is not retried", got)
	}
}

func TestEmptyIDs(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	ctx := t.Context()
	_, getErr := tb.portfolio.Get(ctx, "acme", "")
	_, noTenantGetErr := tb.portfolio.Get(ctx, "", "acc")
	_, execErr := tb.execution.Execute(ctx, ExecutionRequest{})
	noTenantExec := order("e1", "AAPL")
	noTenantExec.Tenant = ""
	_, noTenantExecErr := tb.execution.Execute(ctx, noTenantExec)
	noOrderExec := order("e1", "AAPL")
	noOrderExec.OrderID = ""
	_, noOrderExecErr := tb.execution.Execute(ctx, noOrderExec)
	for _, err := range []error{
		getErr,
		noTenantGetErr,
		tb.portfolio.Reserve(ctx, Reservation{Tenant: "acme", OrderID: "o1", AccountID: "a", Amount: 1}),
		tb.portfolio.Reserve(ctx, Reservation{OrderID: "o1", ID: "r1", AccountID: "a", Amount: 1}),
		tb.portfolio.Reserve(ctx, Reservation{Tenant: "acme", ID: "r1", AccountID: "a", Amount: 1}),
		tb.portfolio.Release(ctx, ReleaseRequest{Tenant: "acme", OrderID: "o1"}),
		tb.portfolio.Release(ctx, ReleaseRequest{OrderID: "o1", ReservationID: "r1"}),
		tb.portfolio.Release(ctx, ReleaseRequest{Tenant: "acme", ReservationID: "r1"}),
		execErr,
		noTenantExecErr,
		noOrderExecErr,
	} {
		if err == nil || IsTransient(err) {
			t.Errorf("err = %v, want a permanent error", err)
		}
	}
	if got := tb.sim.Stats(); got != (sim.Stats{}) {
		t.Errorf("the sim saw requests: %+v", got)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	got := Config{BaseURL: "http://x"}.withDefaults()
	if got.Timeout != 2*time.Second || got.MaxAttempts != 3 || got.BackoffBase != 50*time.Millisecond ||
		got.BackoffMax != time.Second || got.Budget != 5*time.Second || got.MaxConcurrent != 64 ||
		got.MaxBodyBytes != 1<<20 || got.HTTPClient == nil || got.Logger == nil {
		t.Errorf("defaults: %+v", got)
	}
	wantBreaker := BreakerConfig{FailureRatio: 0.5, MinRequests: 10, Interval: 10 * time.Second, OpenTimeout: 5 * time.Second, HalfOpenProbes: 1, ConsecutiveFailures: 5}
	if diff := cmp.Diff(wantBreaker, got.Breaker); diff != "" {
		t.Errorf("breaker defaults (-want +got):\n%s", diff)
	}

	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no base url", func(c *Config) { c.BaseURL = "" }, "missing BaseURL"},
		{"not http", func(c *Config) { c.BaseURL = "ftp://x" }, "not an http(s) URL"},
		{"no host", func(c *Config) { c.BaseURL = "http://" }, "not an http(s) URL"},
		{"query", func(c *Config) { c.BaseURL = "http://x/?a=1" }, "query"},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, "negative"},
		{"negative attempts", func(c *Config) { c.MaxAttempts = -1 }, "MaxAttempts"},
		{"base over max", func(c *Config) { c.BackoffBase = 2 * time.Second }, "BackoffBase"},
		{"negative concurrency", func(c *Config) { c.MaxConcurrent = -2 }, "MaxConcurrent"},
		{"ratio", func(c *Config) { c.Breaker.FailureRatio = 1.5 }, "FailureRatio"},
		{"min requests", func(c *Config) { c.Breaker.MinRequests = -1 }, "MinRequests"},
		{"probes", func(c *Config) { c.Breaker.HalfOpenProbes = -1 }, "HalfOpenProbes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{BaseURL: "http://x"}
			tt.edit(&cfg)
			_, err := NewPortfolio(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one about %q", err, tt.want)
			}
		})
	}
}

// TestHeadersMatchSimulator: the simulator reads the headers the clients send.
func TestHeadersMatchSimulator(t *testing.T) {
	if HeaderTenant != sim.HeaderTenant || HeaderOrder != sim.HeaderOrder {
		t.Errorf("clients send %s and %s, the simulator reads %s and %s", HeaderTenant, HeaderOrder, sim.HeaderTenant, sim.HeaderOrder)
	}
}

// TestUnknownAccount: a portfolio service that answers 404 unknown_account for an account
// the tenant does not have gives ErrUnknownAccount, final and no failure of the service;
// a 404 of anything else is a bug on our side, not an answer about the account.
func TestUnknownAccount(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(s *sim.Sim) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/portfolios/gone" {
				http.NotFound(w, r)
				return
			}
			s.ServeHTTP(w, r)
		})
	}, nil)
	ctx := t.Context()
	closed := sim.New(sim.Config{ClosedAccounts: true})
	srv := httptest.NewServer(closed)
	t.Cleanup(srv.Close)
	closed.SetTenantBalance("acme", "acc", 100)
	strict := newBundle(t, closed, testConfig(srv.URL))

	if _, err := strict.portfolio.Get(ctx, "acme", "acc"); err != nil {
		t.Fatalf("acme's own account: %v", err)
	}
	_, getErr := strict.portfolio.Get(ctx, "globex", "acc")
	reserveErr := strict.portfolio.Reserve(ctx, Reservation{Tenant: "globex", OrderID: "o1", ID: "o1", AccountID: "acc", Amount: 1})
	for _, err := range []error{getErr, reserveErr} {
		if !errors.Is(err, ErrUnknownAccount) || IsTransient(err) {
			t.Errorf("err = %v, want ErrUnknownAccount, not transient", err)
		}
	}
	if st := strict.portfolio.Stats(); st.Failed != 0 || st.Sent != 3 {
		t.Errorf("stats = %+v: want 3 calls sent, none a failure", st)
	}

	_, err := tb.portfolio.Get(ctx, "acme", "gone")
	if se, ok := errors.AsType[*StatusError](err); !ok || se.Code != http.StatusNotFound || errors.Is(err, ErrUnknownAccount) {
		t.Errorf("a plain 404: err = %v, want a StatusError 404", err)
	}
}
