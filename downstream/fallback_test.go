package downstream

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestReaderFallsBackToLastView(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, func(c *Config) { c.MaxAttempts = 1 })
	rdb := redistest.Shared(t).NewClient(t)
	r := NewReader(tb.portfolio, rdb, ReaderConfig{})
	ctx := t.Context()
	tb.sim.SetBalance("acc-1", 500)

	fresh, err := r.Read(ctx, "acme", "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	want := Snapshot{View: View{AccountID: "acc-1", Cash: 500, Available: 500, AsOf: fixedNow}}
	if diff := cmp.Diff(want, fresh); diff != "" {
		t.Errorf("fresh (-want +got):\n%s", diff)
	}
	if ttl := rdb.TTL(ctx, "ag:{acme}:pf:acc-1").Val(); ttl <= 23*time.Hour {
		t.Errorf("cached view TTL = %v, want the 24h default", ttl)
	}

	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	stale, err := r.Read(ctx, "acme", "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	want.Stale = true
	if diff := cmp.Diff(want, stale); diff != "" {
		t.Errorf("stale (-want +got):\n%s", diff)
	}

	// Views are the tenant's own: another tenant has nothing to fall back on.
	_, err = r.Read(ctx, "globex", "acc-1")
	if se, ok := errors.AsType[*StatusError](err); !ok || se.Code != 503 || !IsTransient(err) {
		t.Fatalf("other tenant: err = %v, want the 503", err)
	}
	if d, ok := RetryAfter(err); !ok || d != time.Second {
		t.Errorf("RetryAfter = %v, %v; want the downstream's 1s", d, ok)
	}
}

// TestReaderReadsTheTenantsAccount: the fresh read asks the portfolio service for the
// tenant's account, not for whichever account has that id (before, only the cached view
// was per tenant, and the read showed every tenant the same account).
func TestReaderReadsTheTenantsAccount(t *testing.T) {
	t.Parallel()
	tb := setup(t, nil, nil)
	r := NewReader(tb.portfolio, redistest.Shared(t).NewClient(t), ReaderConfig{})
	tb.sim.SetTenantBalance("acme", "acc_1001", 5000)
	tb.sim.SetTenantBalance("globex", "acc_1001", 20)
	for tenant, cash := range map[string]float64{"acme": 5000, "globex": 20} {
		v, err := r.Read(t.Context(), tenant, "acc_1001")
		if err != nil || v.Cash != cash {
			t.Errorf("%s reads %+v, %v; want its own cash %v", tenant, v, err, cash)
		}
	}
}

// TestReaderForgetsUnknownAccount: once the service says the tenant has no such account,
// an outage does not bring its old view back.
func TestReaderForgetsUnknownAccount(t *testing.T) {
	t.Parallel()
	gone := false
	var mu sync.Mutex
	tb := setup(t, func(s *sim.Sim) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			g := gone
			mu.Unlock()
			if g {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"error":"unknown_account"}`))
				return
			}
			s.ServeHTTP(w, r)
		})
	}, func(c *Config) { c.MaxAttempts = 1 })
	r := NewReader(tb.portfolio, redistest.Shared(t).NewClient(t), ReaderConfig{})
	ctx := t.Context()
	if _, err := r.Read(ctx, "acme", "acc-1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	gone = true
	mu.Unlock()
	if _, err := r.Read(ctx, "acme", "acc-1"); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf("err = %v, want ErrUnknownAccount", err)
	}
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	mu.Lock()
	gone = false
	mu.Unlock()
	if s, err := r.Read(ctx, "acme", "acc-1"); err == nil {
		t.Errorf("during the outage: %+v, want no stale view of an unknown account", s)
	}
}

func TestReaderPassesOtherErrors(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(error) bool
	}{
		{"not found", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) },
			func(err error) bool { se, ok := errors.AsType[*StatusError](err); return ok && se.Code == 404 }},
		{"view of another account", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"account_id":"other","cash":1,"reserved":0,"available":1,"as_of":"2026-01-02T03:04:05Z"}`))
		}, func(err error) bool { return errors.Is(err, ErrBadResponse) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t, func(*sim.Sim) http.Handler { return tt.handler }, func(c *Config) { c.MaxAttempts = 1 })
			r := NewReader(tb.portfolio, rdb, ReaderConfig{Prefix: "pass:"})
			_, err := r.Read(t.Context(), "acme", "acc-1")
			if !tt.check(err) {
				t.Errorf("err = %v", err)
			}
		})
	}

	tb := setup(t, nil, nil)
	r := NewReader(tb.portfolio, rdb, ReaderConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Read(ctx, "acme", "acc-1"); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err = %v", err)
	}
}
