package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type testBundle struct {
	sim *sim.Sim
	srv *httptest.Server
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return setupWith(t, sim.Config{NowFunc: func() time.Time { return fixedNow }})
}

func setupWith(t *testing.T, cfg sim.Config) *testBundle {
	t.Helper()
	s := sim.New(cfg)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &testBundle{sim: s, srv: srv}
}

type response struct {
	code   int
	header http.Header
	body   map[string]any
	raw    []byte
}

// do sends a request for tenant "acme" and order "o1" with a JSON body (nil for none) and
// decodes a JSON answer, if any.
func (tb *testBundle) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	return tb.doAs(t, "acme", "o1", method, path, body)
}

// doAs is do for a tenant and an order; an empty one sends no header.
func (tb *testBundle) doAs(t *testing.T, tenant, order, method, path string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, tb.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tenant != "" {
		req.Header.Set(sim.HeaderTenant, tenant)
	}
	if order != "" {
		req.Header.Set(sim.HeaderOrder, order)
	}
	resp, err := tb.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{code: resp.StatusCode, header: resp.Header, raw: raw}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/problem+json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return r
}

func (tb *testBundle) setFaults(t *testing.T, svc sim.Service, f sim.Faults) {
	t.Helper()
	if err := tb.sim.SetFaults(svc, f); err != nil {
		t.Fatal(err)
	}
}

// forAcme makes req a call of tenant "acme" for order "o1".
func forAcme(req *http.Request) {
	req.Header.Set(sim.HeaderTenant, "acme")
	req.Header.Set(sim.HeaderOrder, "o1")
}

func wantCode(t *testing.T, r response, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status = %d, want %d; body %s", r.code, code, r.raw)
	}
}

func execBody(id, symbol string) map[string]any {
	return map[string]any{"execution_id": id, "account_id": "acc", "symbol": symbol, "side": "buy", "quantity": 5}
}

func TestPortfolio(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	r := tb.do(t, "GET", "/portfolios/new-account", nil)
	wantCode(t, r, http.StatusOK)
	want := map[string]any{
		"account_id": "new-account", "cash": 1e6, "reserved": 0.0, "available": 1e6,
		"positions": map[string]any{}, "as_of": "2026-01-02T03:04:05Z",
	}
	if diff := cmp.Diff(want, r.body); diff != "" {
		t.Errorf("portfolio (-want +got):\n%s", diff)
	}

	tb.sim.SetBalance("rich", 50)
	r = tb.do(t, "GET", "/portfolios/rich", nil)
	if r.body["cash"] != 50.0 || r.body["available"] != 50.0 {
		t.Errorf("after SetBalance: %v", r.body)
	}
}

func TestReserveIdempotent(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.sim.SetBalance("acc", 100)
	req := map[string]any{"reservation_id": "r1", "account_id": "acc", "amount": 60}

	first := tb.do(t, "POST", "/reservations", req)
	wantCode(t, first, http.StatusCreated)
	want := map[string]any{"reservation_id": "r1", "account_id": "acc", "amount": 60.0, "status": "reserved"}
	if diff := cmp.Diff(want, first.body); diff != "" {
		t.Errorf("reserve (-want +got):\n%s", diff)
	}

	again := tb.do(t, "POST", "/reservations", req)
	wantCode(t, again, http.StatusOK)
	if diff := cmp.Diff(first.body, again.body); diff != "" {
		t.Errorf("repeat differs (-first +again):\n%s", diff)
	}

	p := tb.do(t, "GET", "/portfolios/acc", nil)
	if p.body["reserved"] != 60.0 || p.body["available"] != 40.0 {
		t.Errorf("reserved twice? %v", p.body)
	}
	if !tb.sim.Reserved("r1") {
		t.Error("Reserved(r1) = false")
	}
	if got := tb.sim.Stats(); got.Reservations != 1 || got.ReserveRequests != 2 {
		t.Errorf("stats = %+v", got)
	}
}

func TestReserveInsufficientFunds(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.sim.SetBalance("poor", 10)
	req := map[string]any{"reservation_id": "r1", "account_id": "poor", "amount": 11}

	r := tb.do(t, "POST", "/reservations", req)
	wantCode(t, r, http.StatusConflict)
	if diff := cmp.Diff(map[string]any{"error": "insufficient_funds"}, r.body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}

	// A refused id stays refused, even once the money is there.
	tb.sim.SetBalance("poor", 1000)
	wantCode(t, tb.do(t, "POST", "/reservations", req), http.StatusConflict)
	if tb.sim.Reserved("r1") {
		t.Error("Reserved(r1) = true after a refusal")
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.sim.SetBalance("acc", 100)
	wantCode(t, tb.do(t, "POST", "/reservations", map[string]any{"reservation_id": "r1", "account_id": "acc", "amount": 30}), http.StatusCreated)

	for range 2 {
		r := tb.do(t, "POST", "/reservations/r1/release", nil)
		wantCode(t, r, http.StatusOK)
		if diff := cmp.Diff(map[string]any{"reservation_id": "r1", "status": "released"}, r.body); diff != "" {
			t.Errorf("release (-want +got):\n%s", diff)
		}
	}
	p := tb.do(t, "GET", "/portfolios/acc", nil)
	if p.body["reserved"] != 0.0 || p.body["available"] != 100.0 {
		t.Errorf("after release: %v", p.body)
	}
	if !tb.sim.Released("r1") || tb.sim.Reserved("r1") {
		t.Errorf("Released = %v, Reserved = %v", tb.sim.Released("r1"), tb.sim.Reserved("r1"))
	}
	if got := tb.sim.Stats().Releases; got != 1 {
		t.Errorf("Releases = %d, want 1", got)
	}

	r := tb.do(t, "POST", "/reservations/never/release", nil)
	wantCode(t, r, http.StatusOK)
	if diff := cmp.Diff(map[string]any{"reservation_id": "never", "status": "unknown"}, r.body); diff != "" {
		t.Errorf("unknown release (-want +got):\n%s", diff)
	}
}

func TestExecuteIdempotent(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	first := tb.do(t, "POST", "/executions", execBody("e1", "AAPL"))
	wantCode(t, first, http.StatusCreated)
	want := map[string]any{
		"execution_id": "e1", "status": "filled", "symbol": "AAPL", "side": "buy",
		"quantity": 5.0, "price": 100.0, "filled_at": "2026-01-02T03:04:05Z",
	}
	if diff := cmp.Diff(want, first.body); diff != "" {
		t.Errorf("fill (-want +got):\n%s", diff)
	}
	again := tb.do(t, "POST", "/executions", execBody("e1", "AAPL"))
	wantCode(t, again, http.StatusOK)
	if diff := cmp.Diff(first.body, again.body); diff != "" {
		t.Errorf("repeat differs (-first +again):\n%s", diff)
	}
	if got := tb.sim.Executions("e1"); got != 1 {
		t.Errorf("Executions = %d, want 1", got)
	}
	if got := tb.sim.ExecutionRequests("e1"); got != 2 {
		t.Errorf("ExecutionRequests = %d, want 2", got)
	}

	limit := execBody("e2", "AAPL")
	limit["limit_price"] = 12.5
	if r := tb.do(t, "POST", "/executions", limit); r.body["price"] != 12.5 {
		t.Errorf("limit fill price = %v, want 12.5", r.body["price"])
	}
}

func TestExecuteRefused(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.setFaults(t, sim.Execution, sim.Faults{RefuseSymbols: []string{"BAD"}})

	r := tb.do(t, "POST", "/executions", execBody("e1", "BAD"))
	wantCode(t, r, http.StatusUnprocessableEntity)
	if r.body["error"] != "refused" || r.body["reason"] == "" {
		t.Errorf("body = %v", r.body)
	}
	// The refusal is the answer for this id, even after the symbol is allowed again.
	tb.sim.ClearFaults()
	wantCode(t, tb.do(t, "POST", "/executions", execBody("e1", "BAD")), http.StatusUnprocessableEntity)
	if got := tb.sim.Executions("e1"); got != 0 {
		t.Errorf("Executions = %d, want 0", got)
	}
	wantCode(t, tb.do(t, "POST", "/executions", execBody("e2", "OK")), http.StatusCreated)
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tests := []struct {
		name string
		path string
		body any
	}{
		{"reserve bad json", "/reservations", `{"reservation_id":`},
		{"reserve no id", "/reservations", map[string]any{"account_id": "a", "amount": 1}},
		{"reserve no account", "/reservations", map[string]any{"reservation_id": "r", "amount": 1}},
		{"reserve no amount", "/reservations", map[string]any{"reservation_id": "r", "account_id": "a"}},
		{"reserve zero amount", "/reservations", map[string]any{"reservation_id": "r", "account_id": "a", "amount": 0}},
		{"reserve negative amount", "/reservations", map[string]any{"reservation_id": "r", "account_id": "a", "amount": -1}},
		{"reserve unknown field", "/reservations", map[string]any{"reservation_id": "r", "account_id": "a", "amount": 1, "x": 1}},
		{"reserve trailing data", "/reservations", `{"reservation_id":"r","account_id":"a","amount":1} {}`},
		{"execute bad json", "/executions", `[1,2`},
		{"execute no id", "/executions", execBody("", "S")},
		{"execute no symbol", "/executions", execBody("e", "")},
		{"execute bad side", "/executions", map[string]any{"execution_id": "e", "account_id": "a", "symbol": "S", "side": "hold", "quantity": 1}},
		{"execute no quantity", "/executions", map[string]any{"execution_id": "e", "account_id": "a", "symbol": "S", "side": "buy"}},
		{"execute zero quantity", "/executions", map[string]any{"execution_id": "e", "account_id": "a", "symbol": "S", "side": "buy", "quantity": 0}},
		{"execute bad limit", "/executions", map[string]any{"execution_id": "e", "account_id": "a", "symbol": "S", "side": "buy", "quantity": 1, "limit_price": -3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantCode(t, tb.do(t, "POST", tt.path, tt.body), http.StatusBadRequest)
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", tb.srv.URL+"/executions", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set(sim.HeaderTenant, "acme")
		req.Header.Set(sim.HeaderOrder, "o1")
		resp, err := tb.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})
	t.Run("idempotency key mismatch", func(t *testing.T) {
		t.Parallel()
		data, _ := json.Marshal(execBody("e-key", "S"))
		req, _ := http.NewRequestWithContext(t.Context(), "POST", tb.srv.URL+"/executions", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "other")
		req.Header.Set(sim.HeaderTenant, "acme")
		req.Header.Set(sim.HeaderOrder, "o1")
		resp, err := tb.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})
}

// TestCallsNameTheirTenant: a call to the services without a tenant is refused with 400 and
// changes nothing; reservations and executions also need the order they are made for.
func TestCallsNameTheirTenant(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	reserve := map[string]any{"reservation_id": "r1", "account_id": "acc", "amount": 1}
	tests := []struct {
		name, tenant, order, method, path string
		body                              any
	}{
		{"portfolio without tenant", "", "", "GET", "/portfolios/acc", nil},
		{"reserve without tenant", "", "o1", "POST", "/reservations", reserve},
		{"reserve without order", "acme", "", "POST", "/reservations", reserve},
		{"release without tenant", "", "o1", "POST", "/reservations/r1/release", nil},
		{"execute without tenant", "", "o1", "POST", "/executions", execBody("e1", "S")},
		{"execute without order", "acme", "", "POST", "/executions", execBody("e1", "S")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tb.doAs(t, tt.tenant, tt.order, tt.method, tt.path, tt.body)
			wantCode(t, r, http.StatusBadRequest)
			want := sim.HeaderTenant
			if tt.tenant != "" {
				want = sim.HeaderOrder
			}
			if detail, _ := r.body["detail"].(string); !strings.Contains(detail, want) {
				t.Errorf("detail = %q, want it to name %s", detail, want)
			}
		})
	}
	if got := tb.sim.Stats(); got.Reservations != 0 || got.Executions != 0 || got.Releases != 0 {
		t.Errorf("calls without tenant or order performed something: %+v", got)
	}
	if _, ok := tb.sim.Account("", "acc"); ok {
		t.Error("a call without tenant created an account")
	}
	if l := tb.sim.Ledgers(); len(l) != 0 {
		t.Errorf("ledgers = %+v, want none: no call named both tenant and order", l)
	}
}

// TestTenantsKeepSeparateBooks: two tenants with an account of the same id have two
// accounts, and the same reservation or execution id in two tenants are two operations.
func TestTenantsKeepSeparateBooks(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.sim.SetTenantBalance("acme", "acc_1001", 100)

	// globex's acc_1001 is its own, with the default cash: it can reserve more than acme has.
	r := tb.doAs(t, "globex", "g1", "POST", "/reservations", map[string]any{"reservation_id": "r1", "account_id": "acc_1001", "amount": 500})
	wantCode(t, r, http.StatusCreated)
	if a, _ := tb.sim.Account("acme", "acc_1001"); a.Cash != 100 || a.Reserved != 0 {
		t.Errorf("acme's account after globex reserved: %+v", a)
	}
	// The same reservation id in acme is a new reservation, held against acme's account.
	r = tb.doAs(t, "acme", "a1", "POST", "/reservations", map[string]any{"reservation_id": "r1", "account_id": "acc_1001", "amount": 500})
	wantCode(t, r, http.StatusConflict)
	wantCode(t, tb.doAs(t, "acme", "a2", "POST", "/reservations", map[string]any{"reservation_id": "r2", "account_id": "acc_1001", "amount": 60}), http.StatusCreated)

	acme := tb.doAs(t, "acme", "", "GET", "/portfolios/acc_1001", nil)
	globex := tb.doAs(t, "globex", "", "GET", "/portfolios/acc_1001", nil)
	if acme.body["cash"] != 100.0 || acme.body["reserved"] != 60.0 {
		t.Errorf("acme sees %v", acme.body)
	}
	if globex.body["cash"] != 1e6 || globex.body["reserved"] != 500.0 {
		t.Errorf("globex sees %v", globex.body)
	}

	// A release by globex of r2 finds no such reservation: acme's funds stay held.
	rel := tb.doAs(t, "globex", "a2", "POST", "/reservations/r2/release", nil)
	wantCode(t, rel, http.StatusOK)
	if rel.body["status"] != "unknown" {
		t.Errorf("globex released acme's reservation: %v", rel.body)
	}
	if a, _ := tb.sim.Account("acme", "acc_1001"); a.Reserved != 60 {
		t.Errorf("acme's reserved after globex's release = %v, want 60", a.Reserved)
	}

	// One execution id, two tenants: two executions.
	wantCode(t, tb.doAs(t, "acme", "x", "POST", "/executions", execBody("e1", "S")), http.StatusCreated)
	wantCode(t, tb.doAs(t, "globex", "x", "POST", "/executions", execBody("e1", "S")), http.StatusCreated)
	if got := tb.sim.Executions("e1"); got != 2 {
		t.Errorf("Executions(e1) over both tenants = %d, want 2", got)
	}
}

// TestClosedAccounts: with ClosedAccounts a tenant has only the accounts given a balance;
// the others answer 404 unknown_account and change nothing.
func TestClosedAccounts(t *testing.T) {
	t.Parallel()
	tb := setupWith(t, sim.Config{ClosedAccounts: true, NowFunc: func() time.Time { return fixedNow }})
	tb.sim.SetTenantBalance("acme", "acc", 100)
	reserve := map[string]any{"reservation_id": "r1", "account_id": "acc", "amount": 10}

	wantCode(t, tb.doAs(t, "acme", "", "GET", "/portfolios/acc", nil), http.StatusOK)
	for _, r := range []response{
		tb.doAs(t, "globex", "", "GET", "/portfolios/acc", nil),
		tb.doAs(t, "globex", "g1", "POST", "/reservations", reserve),
	} {
		wantCode(t, r, http.StatusNotFound)
		if r.body["error"] != "unknown_account" {
			t.Errorf("body = %s", r.raw)
		}
	}
	r := tb.doAs(t, "globex", "g1", "POST", "/executions", execBody("g1", "S"))
	wantCode(t, r, http.StatusUnprocessableEntity)
	if _, ok := tb.sim.Account("globex", "acc"); ok {
		t.Error("globex got an account")
	}
	if got := tb.sim.Stats(); got.Reservations != 0 || got.Executions != 0 {
		t.Errorf("stats = %+v", got)
	}

	// Once opened, the same reservation id goes through: the 404 was not its final answer.
	tb.sim.SetTenantBalance("globex", "acc", 50)
	wantCode(t, tb.doAs(t, "globex", "g1", "POST", "/reservations", reserve), http.StatusCreated)
	// SetBalance opens an account id in every tenant.
	tb.sim.SetBalance("shared", 7)
	if r := tb.doAs(t, "initech", "", "GET", "/portfolios/shared", nil); r.code != http.StatusOK || r.body["cash"] != 7.0 {
		t.Errorf("initech's shared: %d %s", r.code, r.raw)
	}
}

// TestFillSettlesReservation: a fill consumes its order's reservation (reserved goes back
// down, the cash pays for the fill, the position moves), and a release afterwards finds
// nothing to free.
func TestFillSettlesReservation(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.sim.SetTenantBalance("acme", "acc", 1000)
	reserve := func(order string, amount float64) {
		t.Helper()
		wantCode(t, tb.doAs(t, "acme", order, "POST", "/reservations", map[string]any{"reservation_id": order, "account_id": "acc", "amount": amount}), http.StatusCreated)
	}
	execute := func(order, side string, qty float64) {
		t.Helper()
		body := map[string]any{"execution_id": order, "account_id": "acc", "symbol": "S", "side": side, "quantity": qty}
		wantCode(t, tb.doAs(t, "acme", order, "POST", "/executions", body), http.StatusCreated)
	}
	account := func() sim.Account {
		t.Helper()
		a, _ := tb.sim.Account("acme", "acc")
		return a
	}

	reserve("o1", 500)
	if a := account(); a.Reserved != 500 || a.Cash != 1000 {
		t.Fatalf("after reserve: %+v", a)
	}
	execute("o1", "buy", 5) // at the market price, 100
	if diff := cmp.Diff(sim.Account{Cash: 500, Positions: map[string]float64{"S": 5}}, account()); diff != "" {
		t.Errorf("after the buy (-want +got):\n%s", diff)
	}
	l, _ := tb.sim.Ledger("acme", "o1")
	if l.ReservationOpen || l.Settlements != 1 || l.Executions != 1 || l.Releases != 0 {
		t.Errorf("ledger after the fill: %+v", l)
	}
	if !tb.sim.Settled("o1") || tb.sim.Reserved("o1") {
		t.Errorf("Settled = %v, Reserved = %v", tb.sim.Settled("o1"), tb.sim.Reserved("o1"))
	}

	// A release of a settled reservation frees nothing.
	r := tb.doAs(t, "acme", "o1", "POST", "/reservations/o1/release", nil)
	wantCode(t, r, http.StatusOK)
	if r.body["status"] != "settled" {
		t.Errorf("release after the fill: %v", r.body)
	}
	if a := account(); a.Cash != 500 || a.Reserved != 0 {
		t.Errorf("after the late release: %+v", a)
	}
	// Retrying the fill settles nothing twice.
	wantCode(t, tb.doAs(t, "acme", "o1", "POST", "/executions", map[string]any{"execution_id": "o1", "account_id": "acc", "symbol": "S", "side": "buy", "quantity": 5}), http.StatusOK)

	reserve("o2", 200)
	execute("o2", "sell", 2)
	if diff := cmp.Diff(sim.Account{Cash: 700, Positions: map[string]float64{"S": 3}}, account()); diff != "" {
		t.Errorf("after the sell (-want +got):\n%s", diff)
	}
	p := tb.doAs(t, "acme", "", "GET", "/portfolios/acc", nil)
	if p.body["reserved"] != 0.0 || p.body["available"] != 700.0 || p.body["positions"].(map[string]any)["S"] != 3.0 {
		t.Errorf("portfolio = %s", p.raw)
	}
	if got := tb.sim.Stats(); got.Settlements != 2 || got.Releases != 0 {
		t.Errorf("stats = %+v", got)
	}
}

// TestLedger: the simulator counts, per order, what the calls made for it did.
func TestLedger(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ledger := func(t *testing.T, path string) map[string]any {
		t.Helper()
		r := tb.doAs(t, "", "", "GET", path, nil)
		wantCode(t, r, http.StatusOK)
		return r.body
	}

	// o1: reserved, then released twice.
	wantCode(t, tb.doAs(t, "acme", "o1", "POST", "/reservations", map[string]any{"reservation_id": "o1", "account_id": "acc", "amount": 10}), http.StatusCreated)
	if got := ledger(t, "/_sim/orders/o1"); got["reservation_open"] != true || got["reservations"] != 1.0 || got["account_id"] != "acc" {
		t.Errorf("after reserve: %v", got)
	}
	for range 2 {
		wantCode(t, tb.doAs(t, "acme", "o1", "POST", "/reservations/o1/release", nil), http.StatusOK)
	}
	want := map[string]any{
		"order_id": "o1", "tenant": "acme", "account_id": "acc",
		"executions": 0.0, "reservation_open": false, "reservations": 1.0, "releases": 1.0, "settlements": 0.0,
		"reserve_requests": 1.0, "release_requests": 2.0, "execution_requests": 0.0,
	}
	if diff := cmp.Diff(want, ledger(t, "/_sim/orders/o1")); diff != "" {
		t.Errorf("o1 (-want +got):\n%s", diff)
	}

	// o2: executed once, asked three times, one of them answered by an outage.
	wantCode(t, tb.doAs(t, "acme", "o2", "POST", "/executions", execBody("o2", "S")), http.StatusCreated)
	tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.Outage503})
	wantCode(t, tb.doAs(t, "acme", "o2", "POST", "/executions", execBody("o2", "S")), http.StatusServiceUnavailable)
	tb.sim.ClearFaults()
	wantCode(t, tb.doAs(t, "acme", "o2", "POST", "/executions", execBody("o2", "S")), http.StatusOK)
	if got := ledger(t, "/_sim/orders/o2"); got["executions"] != 1.0 || got["execution_requests"] != 3.0 {
		t.Errorf("o2: %v", got)
	}
	// The ledger follows the order id the caller sent, not the execution id: an order
	// executed under two execution ids was executed twice.
	wantCode(t, tb.doAs(t, "acme", "o2", "POST", "/executions", execBody("o2-again", "S")), http.StatusCreated)
	if got, _ := tb.sim.Ledger("acme", "o2"); got.Executions != 2 {
		t.Errorf("o2 under two execution ids: executions = %d, want 2", got.Executions)
	}

	// An order never seen: a 404 problem.
	r := tb.doAs(t, "", "", "GET", "/_sim/orders/never", nil)
	wantCode(t, r, http.StatusNotFound)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" || r.body["status"] != 404.0 || r.body["detail"] == "" {
		t.Errorf("404: %s %s", ct, r.raw)
	}
	if _, ok := tb.sim.Ledger("acme", "never"); ok {
		t.Error("Ledger(never) found")
	}

	// The same order id from two tenants: each has its own ledger; ?tenant= picks one.
	wantCode(t, tb.doAs(t, "globex", "o1", "POST", "/executions", execBody("o1", "S")), http.StatusCreated)
	wantCode(t, tb.doAs(t, "", "", "GET", "/_sim/orders/o1", nil), http.StatusConflict)
	if got := ledger(t, "/_sim/orders/o1?tenant=globex"); got["tenant"] != "globex" || got["executions"] != 1.0 || got["reservations"] != 0.0 {
		t.Errorf("globex's o1: %v", got)
	}
	if got := ledger(t, "/_sim/orders/o1?tenant=acme"); got["executions"] != 0.0 || got["releases"] != 1.0 {
		t.Errorf("acme's o1: %v", got)
	}
	if n := len(tb.sim.Ledgers()); n != 3 {
		t.Errorf("Ledgers() has %d orders, want 3", n)
	}
	var list struct{ Data []sim.OrderLedger }
	for _, c := range []struct {
		query string
		want  []string
	}{{"", []string{"acme/o1", "acme/o2", "globex/o1"}}, {"?tenant=globex", []string{"globex/o1"}}, {"?tenant=initech", nil}} {
		r := tb.doAs(t, "", "", "GET", "/_sim/orders"+c.query, nil)
		wantCode(t, r, http.StatusOK)
		if err := json.Unmarshal(r.raw, &list); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range list.Data {
			got = append(got, l.Tenant+"/"+l.OrderID)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("GET /_sim/orders%s (-want +got):\n%s", c.query, diff)
		}
	}

	tb.sim.Reset()
	wantCode(t, tb.doAs(t, "", "", "GET", "/_sim/orders/o2", nil), http.StatusNotFound)
}

func TestFaultOutage503(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.Outage503})

	r := tb.do(t, "POST", "/executions", execBody("e1", "S"))
	wantCode(t, r, http.StatusServiceUnavailable)
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	if tb.sim.Executions("e1") != 0 || tb.sim.ExecutionRequests("e1") != 1 {
		t.Errorf("Executions = %d, requests = %d", tb.sim.Executions("e1"), tb.sim.ExecutionRequests("e1"))
	}
	// The other service is not affected.
	wantCode(t, tb.do(t, "GET", "/portfolios/a", nil), http.StatusOK)
	if got := tb.sim.Stats(); got.Faulted != 1 || got.ExecuteRequests != 1 || got.PortfolioRequests != 1 {
		t.Errorf("stats = %+v", got)
	}
}

func TestFaultOutageReset(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.setFaults(t, sim.Portfolio, sim.Faults{Outage: sim.OutageReset})

	data, _ := json.Marshal(map[string]any{"reservation_id": "r1", "account_id": "a", "amount": 1})
	resp, err := tb.srv.Client().Post(tb.srv.URL+"/reservations", "application/json", bytes.NewReader(data))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want a connection error", resp.StatusCode)
	}
	if tb.sim.Reserved("r1") || tb.sim.Stats().Reservations != 0 {
		t.Error("a reset request reserved funds")
	}
	if tb.sim.Stats().ReserveRequests == 0 {
		t.Error("the reset request was not counted")
	}
}

func TestFaultErrorRate(t *testing.T) {
	t.Parallel()

	// run sends n portfolio reads to a sim with the given seed and reports which failed.
	run := func(seed uint64, rate float64, n int) []bool {
		tb := setupWith(t, sim.Config{Rand: rand.New(rand.NewPCG(seed, seed))})
		s := tb.sim
		tb.setFaults(t, sim.Portfolio, sim.Faults{ErrorRate: rate})
		failed := make([]bool, n)
		for i := range failed {
			failed[i] = tb.do(t, "GET", "/portfolios/a", nil).code == http.StatusServiceUnavailable
		}
		if got := s.Stats().Faulted; got != count(failed) {
			t.Errorf("Faulted = %d, want %d", got, count(failed))
		}
		return failed
	}

	if got := count(run(1, 1, 10)); got != 10 {
		t.Errorf("rate 1: %d of 10 failed", got)
	}
	if got := count(run(1, 0, 10)); got != 0 {
		t.Errorf("rate 0: %d of 10 failed", got)
	}
	a, b := run(7, 0.5, 100), run(7, 0.5, 100)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, other failures (-a +b):\n%s", diff)
	}
	if n := count(a); n < 20 || n > 80 {
		t.Errorf("rate 0.5: %d of 100 failed", n)
	}
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func TestFaultLatency(t *testing.T) {
	t.Parallel()

	t.Run("delays", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Execution, sim.Faults{Latency: 20 * time.Millisecond})
		start := time.Now()
		wantCode(t, tb.do(t, "POST", "/executions", execBody("e1", "S")), http.StatusCreated)
		if d := time.Since(start); d < 20*time.Millisecond {
			t.Errorf("answered after %v, want at least 20ms", d)
		}
	})

	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Execution, sim.Faults{Latency: time.Hour})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		data, _ := json.Marshal(execBody("e1", "S"))
		req, _ := http.NewRequestWithContext(ctx, "POST", tb.srv.URL+"/executions", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		forAcme(req)
		resp, err := tb.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("status %d, want a timeout", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a deadline", err)
		}
		// The client may give up before the request even arrived: wait for it.
		for deadline := time.Now().Add(10 * time.Second); tb.sim.ExecutionRequests("e1") == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if tb.sim.Executions("e1") != 0 || tb.sim.ExecutionRequests("e1") != 1 {
			t.Errorf("Executions = %d, requests = %d", tb.sim.Executions("e1"), tb.sim.ExecutionRequests("e1"))
		}
	})
}

func TestFaultSlowDrip(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.setFaults(t, sim.Execution, sim.Faults{SlowDrip: 100 * time.Microsecond})
	start := time.Now()
	r := tb.do(t, "POST", "/executions", execBody("e1", "S"))
	wantCode(t, r, http.StatusCreated)
	if r.body["execution_id"] != "e1" {
		t.Errorf("body = %s", r.raw)
	}
	if min := time.Duration(len(r.raw)-1) * 100 * time.Microsecond; time.Since(start) < min {
		t.Errorf("took %v, want at least %v", time.Since(start), min)
	}
	if tb.sim.Executions("e1") != 1 {
		t.Error("a slow answer must still perform the execution")
	}
}

func TestFaultGarbage(t *testing.T) {
	t.Parallel()

	t.Run("invalid json", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Execution, sim.Faults{Garbage: sim.GarbageInvalidJSON})
		req, _ := http.NewRequestWithContext(t.Context(), "POST", tb.srv.URL+"/executions", strings.NewReader(`{"execution_id":"e1","account_id":"a","symbol":"S","side":"buy","quantity":1}`))
		req.Header.Set("Content-Type", "application/json")
		forAcme(req)
		resp, err := tb.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if json.Valid(raw) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got valid JSON %s (%s)", raw, resp.Header.Get("Content-Type"))
		}
		if tb.sim.Executions("e1") != 1 {
			t.Error("garbage must spoil the answer of a performed execution")
		}
	})

	t.Run("wrong content type", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Portfolio, sim.Faults{Garbage: sim.GarbageWrongContentType})
		r := tb.do(t, "GET", "/portfolios/a", nil)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !json.Valid(r.raw) {
			t.Errorf("Content-Type = %q, body %s", ct, r.raw)
		}
	})

	t.Run("missing field", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Execution, sim.Faults{Garbage: sim.GarbageMissingField})
		r := tb.do(t, "POST", "/executions", execBody("e1", "S"))
		if _, ok := r.body["price"]; ok || r.body["execution_id"] != "e1" {
			t.Errorf("body = %s, want a fill without price", r.raw)
		}
		tb.setFaults(t, sim.Portfolio, sim.Faults{Garbage: sim.GarbageMissingField})
		if r := tb.do(t, "GET", "/portfolios/a", nil); r.body["available"] != nil {
			t.Errorf("body = %s, want a view without available", r.raw)
		}
	})

	t.Run("huge", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Portfolio, sim.Faults{Garbage: sim.GarbageHuge})
		req, _ := http.NewRequestWithContext(t.Context(), "GET", tb.srv.URL+"/portfolios/a", nil)
		forAcme(req)
		resp, err := tb.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if n < 100<<20 || resp.ContentLength != -1 {
			t.Errorf("read %d bytes (Content-Length %d), want a streamed 100 MiB", n, resp.ContentLength)
		}
	})

	t.Run("huge client goes away", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.setFaults(t, sim.Portfolio, sim.Faults{Garbage: sim.GarbageHuge})
		req, _ := http.NewRequestWithContext(t.Context(), "GET", tb.srv.URL+"/portfolios/a", nil)
		forAcme(req)
		resp, err := tb.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // the handler must stop; goleak checks it did
	})
}

func TestFaultsAPI(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	r := tb.do(t, "PUT", "/_sim/faults", `{"execution": {"latency": "250ms", "error_rate": 0.25, "outage": "503", "slow_drip": "1ms", "refuse_symbols": ["X"], "garbage": "huge"}}`)
	wantCode(t, r, http.StatusOK)
	want := sim.Faults{
		Latency: 250 * time.Millisecond, ErrorRate: 0.25, Outage: sim.Outage503,
		SlowDrip: time.Millisecond, RefuseSymbols: []string{"X"}, Garbage: sim.GarbageHuge,
	}
	if diff := cmp.Diff(want, tb.sim.Faults(sim.Execution)); diff != "" {
		t.Errorf("execution faults (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sim.Faults{}, tb.sim.Faults(sim.Portfolio), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("portfolio faults (-want +got):\n%s", diff)
	}

	got := tb.do(t, "GET", "/_sim/faults", nil)
	wantCode(t, got, http.StatusOK)
	wantBody := map[string]any{
		"portfolio": map[string]any{"latency": "0s", "error_rate": 0.0, "outage": "", "slow_drip": "0s", "refuse_symbols": []any{}, "garbage": ""},
		"execution": map[string]any{"latency": "250ms", "error_rate": 0.25, "outage": "503", "slow_drip": "1ms", "refuse_symbols": []any{"X"}, "garbage": "huge"},
	}
	if diff := cmp.Diff(wantBody, got.body); diff != "" {
		t.Errorf("GET /_sim/faults (-want +got):\n%s", diff)
	}

	wantCode(t, tb.do(t, "PUT", "/_sim/faults/portfolio", `{"outage": "reset"}`), http.StatusOK)
	if got := tb.sim.Faults(sim.Portfolio).Outage; got != sim.OutageReset {
		t.Errorf("portfolio outage = %q", got)
	}
	if r := tb.do(t, "GET", "/_sim/faults/portfolio", nil); r.body["outage"] != "reset" {
		t.Errorf("GET /_sim/faults/portfolio = %s", r.raw)
	}
	wantCode(t, tb.do(t, "PUT", "/_sim/faults", `{}`), http.StatusOK)
	if diff := cmp.Diff(sim.Faults{}, tb.sim.Faults(sim.Execution), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("PUT {} left faults (-want +got):\n%s", diff)
	}

	for _, bad := range []struct{ path, body string }{
		{"/_sim/faults", `{"execution": {"outage": "down"}}`},
		{"/_sim/faults", `{"execution": {"error_rate": 2}}`},
		{"/_sim/faults", `{"execution": {"latency": "soon"}}`},
		{"/_sim/faults", `{"execution": {"latency": 5}}`},
		{"/_sim/faults", `{"execution": {"garbage": "noise"}}`},
		{"/_sim/faults", `{"execution": {"latncy": "1s"}}`},
		{"/_sim/faults", `{"risk": {}}`},
		{"/_sim/faults/execution", `{"slow_drip": "-1s"}`},
		{"/_sim/faults/execution", `not json`},
	} {
		if r := tb.do(t, "PUT", bad.path, bad.body); r.code != http.StatusBadRequest {
			t.Errorf("PUT %s %s: status %d, want 400", bad.path, bad.body, r.code)
		}
	}
	wantCode(t, tb.do(t, "GET", "/_sim/faults/risk", nil), http.StatusNotFound)
	if err := tb.sim.SetFaults("risk", sim.Faults{}); err == nil {
		t.Error("SetFaults(risk) succeeded")
	}
}

func TestStatsAndReset(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.do(t, "GET", "/portfolios/a", nil)
	tb.do(t, "POST", "/reservations", map[string]any{"reservation_id": "r1", "account_id": "a", "amount": 1})
	tb.do(t, "POST", "/reservations/r1/release", nil)
	tb.do(t, "POST", "/executions", execBody("e1", "S"))
	tb.do(t, "POST", "/executions", execBody("e1", "S"))

	want := sim.Stats{
		PortfolioRequests: 1, ReserveRequests: 1, ReleaseRequests: 1, ExecuteRequests: 2,
		Reservations: 1, Releases: 1, Executions: 1,
	}
	if diff := cmp.Diff(want, tb.sim.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	r := tb.do(t, "GET", "/_sim/stats", nil)
	if r.body["execute_requests"] != 2.0 || r.body["executions"] != 1.0 {
		t.Errorf("GET /_sim/stats = %s", r.raw)
	}

	tb.setFaults(t, sim.Execution, sim.Faults{Outage: sim.Outage503})
	tb.sim.Reset()
	if diff := cmp.Diff(sim.Stats{}, tb.sim.Stats()); diff != "" {
		t.Errorf("Stats after Reset (-want +got):\n%s", diff)
	}
	if tb.sim.Executions("e1") != 0 || tb.sim.Released("r1") || tb.sim.Faults(sim.Execution).Outage != "" {
		t.Error("Reset kept state")
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{})
	srv, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/portfolios/a", nil)
	forAcme(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := s.Start(strings.TrimPrefix(srv.URL, "http://") + "x"); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}
