package orders

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is where an order stands in its life.
type Status string

// The statuses. Pending, Validated and FundsReserved are in flight; the others are terminal.
const (
	Pending       Status = "pending"
	Validated     Status = "validated"
	FundsReserved Status = "funds_reserved"
	Executed      Status = "executed"
	Rejected      Status = "rejected"
	Failed        Status = "failed"
	Cancelled     Status = "cancelled"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{Pending, Validated, FundsReserved, Executed, Rejected, Failed, Cancelled}

// Terminal reports whether no transition leaves s.
func (s Status) Terminal() bool {
	switch s {
	case Executed, Rejected, Failed, Cancelled:
		return true
	}
	return false
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// transitions is the state machine: from → allowed targets.
// Rejected is only reachable before funds are reserved; failed and cancelled
// are reachable from any in-flight status (compensation releases what was held).
var transitions = map[Status][]Status{
	Pending:       {Validated, Rejected, Failed, Cancelled},
	Validated:     {FundsReserved, Rejected, Failed, Cancelled},
	FundsReserved: {Executed, Failed, Cancelled},
}

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Side is buy or sell.
type Side string

// Sides.
const (
	Buy  Side = "buy"
	Sell Side = "sell"
)

// Type is the order type.
type Type string

// Order types.
const (
	Market Type = "market"
	Limit  Type = "limit"
)

// Request is what a client asks for. It is validated by [Request.Validate].
type Request struct {
	AccountID     string            `json:"account_id"`
	Symbol        string            `json:"symbol"`
	Side          Side              `json:"side"`
	Quantity      float64           `json:"quantity"`
	Type          Type              `json:"type"`
	LimitPrice    *float64          `json:"limit_price,omitempty"`
	ClientOrderID string            `json:"client_order_id,omitempty"`
	CallbackURL   string            `json:"callback_url,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

// Fill is the execution's answer for an executed order.
type Fill struct {
	ExecutionID string    `json:"execution_id"`
	Price       float64   `json:"price"`
	Quantity    float64   `json:"quantity"`
	FilledAt    time.Time `json:"filled_at"`
}

// Order is an order and where it stands.
type Order struct {
	ID     string `json:"id"`
	Tenant string `json:"-"`
	Request
	Status    Status    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Fill      *Fill     `json:"fill,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Deadline  time.Time `json:"deadline"`
	// CancelRequested is set once a cancel was accepted and not yet carried out.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Version is the sequence number of the order's last event.
	Version int64 `json:"version"`
}

// Notional is the amount to reserve: quantity × price, where a market order
// uses marketPrice as its estimate.
func (o *Order) Notional(marketPrice float64) float64 {
	p := marketPrice
	if o.Type == Limit && o.LimitPrice != nil {
		p = *o.LimitPrice
	}
	return o.Quantity * p
}

// Limits on a request.
const (
	MaxMetadataKeys   = 16
	MaxMetadataKey    = 64
	MaxMetadataValue  = 512
	MaxClientOrderID  = 128
	MaxQuantity       = 1e12
	MaxCallbackURLLen = 2048
	// MaxPrice bounds limit_price, like MaxQuantity the quantity.
	MaxPrice = 1e12
	// MaxDecimals is the most decimal places of a quantity or price, and
	// MaxSignificant its most significant digits: together they keep every
	// accepted value exact in the float64 that JSON decoders (ours and the
	// downstream's) read it into.
	MaxDecimals    = 8
	MaxSignificant = 15
)

var (
	accountRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
	symbolRe  = regexp.MustCompile(`^[A-Z0-9][A-Z0-9.\-/]{0,15}$`)
	coidRe    = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)
)

// ValidAccountID reports whether id has the form of an account id (as in a Request).
func ValidAccountID(id string) bool { return accountRe.MatchString(id) }

// FieldError names one offending field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError lists every offending field of a request.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Reason
	}
	return "invalid order: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(field, reason string) {
	e.Fields = append(e.Fields, FieldError{field, reason})
}

// Validate checks the request's values. It returns a *ValidationError listing every problem.
func (r *Request) Validate() error {
	var v ValidationError
	switch {
	case r.AccountID == "":
		v.add("account_id", "is required")
	case !accountRe.MatchString(r.AccountID):
		v.add("account_id", "must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
	}
	switch {
	case r.Symbol == "":
		v.add("symbol", "is required")
	case !symbolRe.MatchString(r.Symbol):
		v.add("symbol", "must be 1-16 upper-case letters, digits, '.', '-' or '/'")
	}
	switch r.Side {
	case Buy, Sell:
	case "":
		v.add("side", "is required")
	default:
		v.add("side", "must be buy or sell")
	}
	switch {
	case math.IsNaN(r.Quantity) || math.IsInf(r.Quantity, 0):
		v.add("quantity", "must be a finite number")
	case r.Quantity <= 0:
		v.add("quantity", "must be greater than 0")
	case r.Quantity > MaxQuantity:
		v.add("quantity", fmt.Sprintf("must be at most %g", float64(MaxQuantity)))
	default:
		if reason := DecimalReason(strconv.FormatFloat(r.Quantity, 'f', -1, 64)); reason != "" {
			v.add("quantity", reason)
		}
	}
	switch r.Type {
	case Market:
		if r.LimitPrice != nil {
			v.add("limit_price", "must be absent for market orders")
		}
	case Limit:
		switch {
		case r.LimitPrice == nil:
			v.add("limit_price", "is required for limit orders")
		case math.IsNaN(*r.LimitPrice) || math.IsInf(*r.LimitPrice, 0) || *r.LimitPrice <= 0:
			v.add("limit_price", "must be greater than 0")
		case *r.LimitPrice > MaxPrice:
			v.add("limit_price", fmt.Sprintf("must be at most %g", float64(MaxPrice)))
		default:
			if reason := DecimalReason(strconv.FormatFloat(*r.LimitPrice, 'f', -1, 64)); reason != "" {
				v.add("limit_price", reason)
			}
		}
	case "":
		v.add("type", "is required")
	default:
		v.add("type", "must be market or limit")
	}
	if r.ClientOrderID != "" && !coidRe.MatchString(r.ClientOrderID) {
		v.add("client_order_id", "must be 1-128 printable ASCII characters without spaces")
	}
	if r.CallbackURL != "" && (len(r.CallbackURL) > MaxCallbackURLLen || !strings.HasPrefix(r.CallbackURL, "https://") && !strings.HasPrefix(r.CallbackURL, "http://")) {
		v.add("callback_url", "must be an http(s) URL of at most 2048 characters")
	}
	if len(r.Metadata) > MaxMetadataKeys {
		v.add("metadata", fmt.Sprintf("must have at most %d keys", MaxMetadataKeys))
	}
	for k, val := range r.Metadata {
		if k == "" || len(k) > MaxMetadataKey || !utf8.ValidString(k) {
			v.add("metadata", fmt.Sprintf("keys must be 1-%d bytes of UTF-8", MaxMetadataKey))
			break
		}
		if len(val) > MaxMetadataValue || !utf8.ValidString(val) {
			v.add("metadata."+k, fmt.Sprintf("must be at most %d bytes of UTF-8", MaxMetadataValue))
		}
	}
	if len(v.Fields) > 0 {
		return &v
	}
	return nil
}

// DecimalReason says what is wrong with a decimal number as written (a JSON
// number such as "2.5", "-1.25e3" or "0.00000001"), or "" when it has at
// most MaxDecimals decimal places and MaxSignificant significant digits.
// It judges the digits only: sign and magnitude are Validate's business.
func DecimalReason(lit string) string {
	lit = strings.TrimPrefix(strings.TrimPrefix(lit, "-"), "+")
	mant, expText, hasExp := strings.Cut(strings.ToLower(lit), "e")
	exp := 0
	if hasExp {
		e, err := strconv.Atoi(expText)
		if err != nil || e > 400 || e < -400 {
			return "is out of range"
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimRight(intPart+frac, "0")
	point := len(intPart) + exp // the decimal point sits after this many digits
	for len(digits) > 0 && digits[0] == '0' {
		digits, point = digits[1:], point-1
	}
	if digits == "" {
		return "" // zero
	}
	if dec := len(digits) - point; dec > MaxDecimals {
		return fmt.Sprintf("must have at most %d decimal places", MaxDecimals)
	}
	if len(digits) > MaxSignificant {
		return fmt.Sprintf("must have at most %d significant digits", MaxSignificant)
	}
	return ""
}

// EventType names what happened to an order.
type EventType string

// Event types. A status change's type is "order." + the new status.
const (
	EventCreated         EventType = "order.created"
	EventCancelRequested EventType = "order.cancel_requested"
)

// StatusEvent is the event type of a change to status s.
func StatusEvent(s Status) EventType { return EventType("order." + string(s)) }

// Event is one entry of an order's log. The log alone rebuilds the order ([Replay]).
type Event struct {
	Seq    int64     `json:"seq"`
	Type   EventType `json:"type"`
	At     time.Time `json:"at"`
	Status Status    `json:"status,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// Order is set on order.created: the order as it was accepted.
	Order *Order `json:"order,omitempty"`
	// Fill is set on order.executed.
	Fill *Fill `json:"fill,omitempty"`
}

// Apply returns o after event e. It does not check the state machine.
func (o Order) Apply(e Event) Order {
	switch e.Type {
	case EventCreated:
		if e.Order != nil {
			tenant := o.Tenant
			o = *e.Order
			o.Tenant = tenant
		}
	case EventCancelRequested:
		o.CancelRequested = true
	default:
		o.Status = e.Status
		if e.Reason != "" {
			o.Reason = e.Reason
		}
		if e.Fill != nil {
			f := *e.Fill
			o.Fill = &f
		}
		if o.Status.Terminal() {
			o.CancelRequested = false
		}
	}
	o.UpdatedAt = e.At
	o.Version = e.Seq
	return o
}

// Replay rebuilds an order from its event log.
func Replay(tenant string, events []Event) (Order, error) {
	if len(events) == 0 || events[0].Type != EventCreated || events[0].Order == nil {
		return Order{}, fmt.Errorf("replay: log does not start with %s", EventCreated)
	}
	o := Order{Tenant: tenant}
	for _, e := range events {
		o = o.Apply(e)
	}
	return o, nil
}
