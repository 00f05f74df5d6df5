package sim

import "net/http"

// A stopgap until the simulator keeps books per tenant: GET /_sim/orders/{order_id}
// answers what the services did for an order, as the chaos suite's checker reads it:
// {"order_id", "executions", "reservation_open"}, 404 for an order never seen. The
// gateway uses the order id as reservation and execution id.
func (s *Sim) handleOrderLedger(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("order_id")
	s.mu.Lock()
	res, reserved := s.reservations[id]
	exe, executed := s.executions[id]
	body := map[string]any{"order_id": id, "executions": 0, "reservation_open": reserved && res.state == held}
	if executed {
		body["executions"] = exe.performed
	}
	s.mu.Unlock()
	if !reserved && !executed {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "the simulator never saw this order"})
		return
	}
	writeJSON(w, http.StatusOK, body)
}
