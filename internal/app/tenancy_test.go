package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// ledger reads GET /_sim/orders/{id} from the simulator, as the chaos suite's checker does.
func (b *bundle) ledger(t *testing.T, id string) (int, sim.OrderLedger) {
	t.Helper()
	rec := httptest.NewRecorder()
	b.sim.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", "/_sim/orders/"+id, nil))
	var l sim.OrderLedger
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
			t.Fatalf("ledger of %s: %v", id, err)
		}
	}
	return rec.Code, l
}

// TestLedgerThroughSaga: every downstream call of the saga names its order and tenant, so
// the simulator's ledger counts, per order, what happened downstream: one execution for an
// executed order, none for a rejected or failed one, and no reservation left open.
func TestLedgerThroughSaga(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.sim.SetFaults(sim.Execution, sim.Faults{RefuseSymbols: []string{"HALT"}}); err != nil {
		t.Fatal(err)
	}
	b.sim.SetBalance("poor", 5)

	executed := b.place(t, order())
	rejected := b.place(t, order(func(m map[string]any) { m["account_id"] = "poor" }))
	failed := b.place(t, order(func(m map[string]any) { m["symbol"] = "HALT" }))
	equal(t, "executed", b.waitTerminal(t, executed.ID, 20*time.Second).Status, orders.Executed)
	equal(t, "rejected", b.waitTerminal(t, rejected.ID, 20*time.Second).Status, orders.Rejected)
	f := b.waitTerminal(t, failed.ID, 20*time.Second)
	equal(t, "failed", f.Status, orders.Failed)
	equal(t, "failed reason", f.Reason, jobs.ReasonExecutionRefused)

	tests := []struct {
		name string
		id   string
		want sim.OrderLedger
	}{
		{"executed", executed.ID, sim.OrderLedger{AccountID: "acc-1", Executions: 1, Reservations: 1, Settlements: 1,
			ReserveRequests: 1, ExecutionRequests: 1}},
		{"rejected", rejected.ID, sim.OrderLedger{AccountID: "poor", ReserveRequests: 1}},
		{"failed", failed.ID, sim.OrderLedger{AccountID: "acc-1", Reservations: 1, Releases: 1,
			ReserveRequests: 1, ReleaseRequests: 1, ExecutionRequests: 2}}, // compensation asks again (decision 4)
	}
	for _, tt := range tests {
		code, got := b.ledger(t, tt.id)
		if code != http.StatusOK {
			t.Fatalf("%s: GET /_sim/orders/%s = %d", tt.name, tt.id, code)
		}
		tt.want.OrderID, tt.want.Tenant = tt.id, "acme"
		if got != tt.want {
			t.Errorf("%s: ledger\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	if code, _ := b.ledger(t, "0190c0de-0000-7000-8000-000000000000"); code != http.StatusNotFound {
		t.Errorf("ledger of an order never sent: %d, want 404", code)
	}
}

// getPortfolio reads GET /v1/portfolios/{account} with an API key, the answer checked
// against openapi.yaml.
func (b *bundle) getPortfolio(t *testing.T, key, account string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "/v1/portfolios/"+account, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := apitest.Client(t, b.url).Do(req)
	if err != nil {
		t.Fatalf("GET /v1/portfolios/%s: %v", account, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

// readPortfolio reads an account that must be there.
func (b *bundle) readPortfolio(t *testing.T, key, account string) server.Portfolio {
	t.Helper()
	code, body := b.getPortfolio(t, key, account)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/portfolios/%s: %d %s", account, code, body)
	}
	var p server.Portfolio
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAccountsBelongToTenant: tenants acme and globex both have an account acc_1001, and
// they are two accounts. globex's orders reserve against globex's book only, its reads
// show its own view, and acme's cash, positions and reservations do not move.
func TestAccountsBelongToTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const globexKey = "other-key-0123456789abcdef"
	b.sim.SetTenantBalance("acme", "acc_1001", 5000)
	b.sim.SetTenantBalance("globex", "acc_1001", 2000)
	// acme has 1,000 reserved for an order in flight (made straight at the simulator, so
	// that it stays held for the whole test).
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/reservations",
		strings.NewReader(`{"reservation_id":"acme-held","account_id":"acc_1001","amount":1000}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(sim.HeaderTenant, "acme")
	req.Header.Set(sim.HeaderOrder, "acme-held")
	b.sim.ServeHTTP(rec, req)
	equal(t, "acme's reservation", rec.Code, http.StatusCreated)
	acmeBefore, _ := b.sim.Account("acme", "acc_1001")

	placeAs := func(key string, qty int) orders.Order {
		t.Helper()
		r := b.do(t, "POST", "/v1/orders", key, order(func(m map[string]any) { m["account_id"] = "acc_1001"; m["quantity"] = qty }))
		if r.status != http.StatusAccepted {
			t.Fatalf("place: %d %s", r.status, r.body)
		}
		return r.order(t)
	}
	waitAs := func(key, id string) orders.Order {
		t.Helper()
		var o orders.Order
		pollUntil(t, 20*time.Second, "order "+id+" to end", func() bool {
			r := b.do(t, "GET", "/v1/orders/"+id+"?wait=2s", key, nil)
			o = r.order(t)
			return o.Status.Terminal()
		})
		return o
	}

	// 3,000 fits acme's 5,000 but not globex's 2,000: refused, whatever acme has.
	big := waitAs(globexKey, placeAs(globexKey, 30).ID)
	equal(t, "globex's big order", big.Status, orders.Rejected)
	equal(t, "reason", big.Reason, jobs.ReasonInsufficientFunds)
	// 1,000 fits: executed against globex's book.
	small := waitAs(globexKey, placeAs(globexKey, 10).ID)
	equal(t, "globex's small order", small.Status, orders.Executed)

	for _, id := range []string{big.ID, small.ID} {
		l, ok := b.sim.Ledger("globex", id)
		if !ok || l.Tenant != "globex" || l.AccountID != "acc_1001" {
			t.Errorf("ledger of globex's order %s: %+v (found %v)", id, l, ok)
		}
		if _, ok := b.sim.Ledger("acme", id); ok {
			t.Errorf("globex's order %s is in acme's ledger", id)
		}
	}
	globex, _ := b.sim.Account("globex", "acc_1001")
	if globex.Cash != 1000 || globex.Reserved != 0 || globex.Positions["AAPL"] != 10 {
		t.Errorf("globex's book: %+v, want 1,000 cash, nothing reserved, 10 AAPL", globex)
	}
	acme, _ := b.sim.Account("acme", "acc_1001")
	if acme.Cash != acmeBefore.Cash || acme.Reserved != acmeBefore.Reserved || len(acme.Positions) != 0 {
		t.Errorf("acme's book moved: %+v, was %+v", acme, acmeBefore)
	}

	// Each reads its own account through the API.
	if p := b.readPortfolio(t, globexKey, "acc_1001"); p.Cash != 1000 || p.Reserved != 0 || p.Available != 1000 {
		t.Errorf("globex reads %+v", p)
	}
	if p := b.readPortfolio(t, apiKey, "acc_1001"); p.Cash != 5000 || p.Reserved != 1000 || p.Available != 4000 {
		t.Errorf("acme reads %+v", p)
	}

	// acme's orders use acme's book: 3,000 fits its 4,000 available.
	acmeOrder := waitAs(apiKey, placeAs(apiKey, 30).ID)
	equal(t, "acme's order", acmeOrder.Status, orders.Executed)
	if p := b.readPortfolio(t, apiKey, "acc_1001"); p.Cash != 2000 || p.Reserved != 1000 {
		t.Errorf("acme reads %+v after its order, want 2,000 cash and 1,000 reserved", p)
	}
	if p := b.readPortfolio(t, globexKey, "acc_1001"); p.Cash != 1000 {
		t.Errorf("globex reads %+v after acme's order, want its 1,000", p)
	}
}

// TestReservedSettles: once every order has ended, nothing stays reserved: executed
// orders' reservations are settled by their fills, failed and cancelled ones are released.
// (Before, every executed order left its reservation held.)
func TestReservedSettles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.sim.SetFaults(sim.Execution, sim.Faults{RefuseSymbols: []string{"HALT"}}); err != nil {
		t.Fatal(err)
	}
	const n = 12
	var ids []string
	for i := range n {
		o := b.place(t, order(func(m map[string]any) {
			m["quantity"] = 1 + i
			if i%4 == 3 {
				m["symbol"] = "HALT" // fails, its reservation released
			}
			if i%3 == 2 {
				m["side"] = "sell"
			}
		}))
		ids = append(ids, o.ID)
	}
	executed := 0
	for _, id := range ids {
		if b.waitTerminal(t, id, 30*time.Second).Status == orders.Executed {
			executed++
		}
	}
	if executed != n-n/4 {
		t.Errorf("%d orders executed, want %d", executed, n-n/4)
	}
	p := b.readPortfolio(t, apiKey, "acc-1")
	if p.Reserved != 0 || p.Available != p.Cash {
		t.Errorf("portfolio with nothing in flight: %+v, want nothing reserved", p)
	}
	for _, id := range ids {
		code, l := b.ledger(t, id)
		if code != http.StatusOK || l.ReservationOpen {
			t.Errorf("order %s: ledger %d %+v, want no reservation open", id, code, l)
		}
		if l.Executions+l.Releases != 1 || l.Settlements != l.Executions {
			t.Errorf("order %s: %s", id, fmt.Sprintf("%+v: want either settled by one fill or released", l))
		}
	}
}

// TestUnknownAccountOfTenant: with a portfolio service that knows whose accounts are
// whose (the simulator with ClosedAccounts), another tenant's account id is not found: a
// read answers 404 and an order is rejected unknown_account, nothing reserved anywhere.
func TestUnknownAccountOfTenant(t *testing.T) {
	t.Parallel()
	b := setupWithSim(t, sim.Config{ClosedAccounts: true})
	const globexKey = "other-key-0123456789abcdef"
	b.sim.SetTenantBalance("acme", "acc_1001", 5000)

	if p := b.readPortfolio(t, apiKey, "acc_1001"); p.Cash != 5000 {
		t.Errorf("acme reads %+v", p)
	}
	code, body := b.getPortfolio(t, globexKey, "acc_1001")
	var p server.Problem
	json.Unmarshal(body, &p)
	if code != http.StatusNotFound || p.Code != "not_found" {
		t.Errorf("globex reads acme's account: %d %s, want 404 not_found", code, body)
	}

	r := b.do(t, "POST", "/v1/orders", globexKey, order(func(m map[string]any) { m["account_id"] = "acc_1001" }))
	if r.status != http.StatusAccepted {
		t.Fatalf("place: %d %s", r.status, r.body)
	}
	id := r.order(t).ID
	var o orders.Order
	pollUntil(t, 20*time.Second, "globex's order to end", func() bool {
		o = b.do(t, "GET", "/v1/orders/"+id+"?wait=2s", globexKey, nil).order(t)
		return o.Status.Terminal()
	})
	equal(t, "status", o.Status, orders.Rejected)
	equal(t, "reason", o.Reason, jobs.ReasonUnknownAccount)
	if l, _ := b.sim.Ledger("globex", id); l.Reservations != 0 || l.Executions != 0 {
		t.Errorf("globex's order downstream: %+v", l)
	}
	if a, _ := b.sim.Account("acme", "acc_1001"); a.Reserved != 0 || a.Cash != 5000 {
		t.Errorf("acme's book: %+v", a)
	}
	if _, ok := b.sim.Account("globex", "acc_1001"); ok {
		t.Error("globex got an account acc_1001")
	}
}
