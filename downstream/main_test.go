package downstream

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testBundle is a simulator and clients of it.
type testBundle struct {
	url       string // the simulator's base URL
	sim       *sim.Sim
	portfolio *Portfolio
	execution *Execution
}

// testConfig is a Config with small timeouts and a breaker that trips after 4 failures.
func testConfig(baseURL string) Config {
	return Config{
		BaseURL:     baseURL,
		Timeout:     500 * time.Millisecond,
		MaxAttempts: 3,
		BackoffBase: time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		Budget:      time.Second,
		Breaker:     BreakerConfig{MinRequests: 4, OpenTimeout: 5 * time.Second},
	}
}

// setup starts a simulator on a loopback httptest server, behind wrap (if not nil), and
// clients of it configured by testConfig and then edit (if not nil).
func setup(t testing.TB, wrap func(*sim.Sim) http.Handler, edit func(*Config)) *testBundle {
	t.Helper()
	s := sim.New(sim.Config{NowFunc: func() time.Time { return fixedNow }})
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	if edit != nil {
		edit(&cfg)
	}
	return newBundle(t, s, cfg)
}

// setupInMemory is setup without a network: requests go straight to the handler, so that
// tests can run in a synctest bubble, where time is fake.
func setupInMemory(t testing.TB, wrap func(*sim.Sim) http.Handler, edit func(*Config)) *testBundle {
	t.Helper()
	s := sim.New(sim.Config{NowFunc: func() time.Time { return fixedNow }})
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	cfg := testConfig("http://sim.test")
	cfg.HTTPClient = &http.Client{Transport: handlerTransport{h}}
	if edit != nil {
		edit(&cfg)
	}
	return newBundle(t, s, cfg)
}

func newBundle(t testing.TB, s *sim.Sim, cfg Config) *testBundle {
	t.Helper()
	p, err := NewPortfolio(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewExecution(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{url: cfg.BaseURL, sim: s, portfolio: p, execution: e}
}

func (tb *testBundle) setFaults(t testing.TB, svc sim.Service, f sim.Faults) {
	t.Helper()
	if err := tb.sim.SetFaults(svc, f); err != nil {
		t.Fatal(err)
	}
}

// handlerTransport serves requests with a handler in the calling goroutine.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (resp *http.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			resp, err = nil, errors.New("connection reset by peer")
		}
	}()
	if r.Body != nil {
		defer r.Body.Close()
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// afterRequests calls fn once n requests have been served by h.
func afterRequests(n int, h http.Handler, fn func()) http.Handler {
	var served atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if served.Add(1) == int64(n) {
			fn()
		}
	})
}

func order(id, symbol string) ExecutionRequest {
	return ExecutionRequest{Tenant: "acme", OrderID: id, ID: id, AccountID: "acc", Symbol: symbol, Side: "buy", Quantity: 5}
}
