package webhooks

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Event is what a webhook delivers: the body of the POST. Its ID is the
// webhook-id header, the same on every attempt and every endpoint, so that
// receivers can drop duplicates.
type Event struct {
	// ID is "evt_" and a UUID derived from the order and the sequence
	// number of its change (see EventID): the same change always makes the
	// same id.
	ID string `json:"id"`
	// Type is the kind of event, such as order.executed.
	Type string `json:"type"`
	// CreatedAt is when the change happened.
	CreatedAt time.Time `json:"created_at"`
	// Sequence is the change's sequence number in the order's event log: a
	// receiver can order the events of one order by it.
	Sequence int64 `json:"sequence"`
	// Data is the order as it stood after the change.
	Data json.RawMessage `json:"data"`
}

// eventNamespace is the namespace of the name-based UUIDs of events.
var eventNamespace = uuid.MustParse("5b0ad6f5-3c54-4bd4-9f31-2a1e0c6b9d70")

// EventID returns the id of the event for the change number seq of the
// tenant's order orderID: "evt_" and a name-based (SHA-1, version 5) UUID of
// the three. Retries of the fan-out therefore produce the same id.
func EventID(tenant, orderID string, seq int64) string {
	return "evt_" + uuid.NewSHA1(eventNamespace, []byte(tenant+"/"+orderID+"/"+strconv.FormatInt(seq, 10))).String()
}

// Body returns the event as sent: compact JSON.
func (e *Event) Body() ([]byte, error) { return json.Marshal(e) }

// Ref names one delivery for the task that carries it out.
type Ref struct {
	Tenant     string `json:"t"`
	DeliveryID string `json:"d"`
	EventID    string `json:"e"`
	// EndpointID is empty for a delivery to an order's callback_url.
	EndpointID string `json:"ep,omitempty"`
	// OrderID is the order whose event is delivered, for the delivery's
	// log lines; the fan-out sets it, a redelivery leaves it empty.
	OrderID string `json:"o,omitempty"`
}
