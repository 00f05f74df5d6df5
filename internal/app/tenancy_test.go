package app_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
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
		{"executed", executed.ID, sim.OrderLedger{AccountID: "acc-1", Executions: 1, Reservations: 1,
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
		if tt.name == "executed" {
			// Settlement is checked apart (TestReservedSettles); here: who and how often.
			got.Settlements, got.ReservationOpen = 0, false
		}
		if got != tt.want {
			t.Errorf("%s: ledger\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	if code, _ := b.ledger(t, "0190c0de-0000-7000-8000-000000000000"); code != http.StatusNotFound {
		t.Errorf("ledger of an order never sent: %d, want 404", code)
	}
}
