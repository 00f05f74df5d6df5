// Package invariant counts what a chaos run broke. It reads only what an outsider can
// read: the gateway's public API (GET /v1/orders/{id} with the tenant's key), the
// simulator's per-order ledger (GET /_sim/orders/{id}) and the log of a webhook receiver,
// and reports, per scenario, the orders accepted and the violations of the invariants
// in DESIGN:
//
//   - lost: an order answered 202 that the API no longer knows (404);
//   - stuck: an order not in a terminal status when the checker gives up waiting;
//   - executed twice: an order the execution service filled more than once, or one
//     client intent (tenant and Idempotency-Key) filled under two order ids;
//   - outcome disagrees: the API says executed and the ledger has no fill, or the API
//     says rejected, failed or cancelled and the ledger has one;
//   - reservations leaked: funds still held downstream for an order that was not
//     executed (or that the gateway lost);
//   - webhooks missing: a terminal order whose event never reached its tenant's
//     endpoint with a valid signature;
//   - duplicate webhooks: deliveries of an event beyond the first (allowed: delivery is
//     at least once);
//   - bad signatures: deliveries whose Standard Webhooks signature did not verify;
//   - wrong tenant: a delivery of an order to another tenant's endpoint;
//   - exited late: a process told to stop (SIGTERM) that did not exit 0 within its
//     grace period (the scenario reports each stop it made as an [Exit]).
//
// Every count but duplicates must be 0 after a scenario.
package invariant

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// ErrNotFound is what an [API] or [Ledger] answers for an order it does not know.
var ErrNotFound = errors.New("not found")

// Accepted is an order placement the API answered 202.
type Accepted struct {
	Tenant  string
	Key     string // the Idempotency-Key the client sent (its intent)
	OrderID string
	At      time.Time
}

// Order is an order as the public API shows it.
type Order struct {
	Status    string    `json:"status"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Terminal reports whether no status follows the order's.
func (o *Order) Terminal() bool {
	switch o.Status {
	case "executed", "rejected", "failed", "cancelled":
		return true
	}
	return false
}

// LedgerEntry is what the downstream simulator did for an order.
type LedgerEntry struct {
	Executions      int  `json:"executions"`
	ReservationOpen bool `json:"reservation_open"`
}

// Delivery is one webhook request the receiver got.
type Delivery struct {
	Tenant         string    `json:"tenant"` // whose endpoint it reached
	WebhookID      string    `json:"webhook_id"`
	Type           string    `json:"type"`
	OrderID        string    `json:"order_id"`
	SignatureValid bool      `json:"signature_valid"`
	At             time.Time `json:"at"`
}

// API reads an order through the gateway's public API with the tenant's key. It answers
// ErrNotFound for an order the API does not know.
type API interface {
	Order(ctx context.Context, tenant, id string) (*Order, error)
}

// Ledger reads the simulator's ledger of an order. It answers ErrNotFound for an order
// the simulator never saw.
type Ledger interface {
	Order(ctx context.Context, id string) (*LedgerEntry, error)
}

// Listed is an order as the API's list of a tenant's orders shows it. Intent is the
// client's own name for what it wanted (the orders' metadata "intent", which the chaos
// clients set to their Idempotency-Key).
type Listed struct {
	ID     string
	Status string
	Intent string
}

// Lister lists every order of a tenant through the public API.
type Lister interface {
	List(ctx context.Context, tenant string) ([]Listed, error)
}

// Receiver returns every delivery the webhook receiver logged so far.
type Receiver interface {
	Deliveries() ([]Delivery, error)
}

// Exit is how a process the scenario stopped with SIGTERM ended.
type Exit struct {
	Process string        // such as "worker 1"
	Code    int           // its exit code; -1 when it had not ended within Grace and was killed
	Took    time.Duration // from the signal to its end
	Grace   time.Duration // how long it may take: its grace period
}

// Late reports whether the process did not exit 0 within its grace period.
func (e Exit) Late() bool { return e.Code != 0 || e.Took > e.Grace }

// Input is a scenario to check.
type Input struct {
	Scenario string
	Accepted []Accepted
	// Subscribed are the tenants with an endpoint that subscribes to every terminal
	// event; their terminal orders must each reach it.
	Subscribed map[string]bool
	// LastFault is when the scenario's last fault ended.
	LastFault time.Time
	// Exits are the processes the scenario stopped with SIGTERM.
	Exits []Exit
}

// Report is what a check counted.
type Report struct {
	Scenario           string
	Accepted           int
	Unacknowledged     int // orders the API holds that no client got a 202 for (not a violation by itself)
	Lost               int
	LostExecuted       int // of the lost orders, those the execution service filled
	Stuck              int
	ExecutedTwice      int
	OutcomeDisagrees   int
	ReservationsLeaked int
	WebhooksMissing    int
	DuplicateWebhooks  int
	BadSignatures      int
	WrongTenant        int
	ExitedLate         int // processes that did not exit 0 within their grace period
	// SlowestExit is the longest a stopped process took to exit.
	SlowestExit time.Duration
	// Finish is the time from the last fault to the last order ending or the last
	// webhook it needs arriving, whichever is later; 0 when all was done before.
	Finish time.Duration
	// Last is the order that ended last, or whose webhook arrived last.
	Last Accepted
	// Examples are a few order ids (or webhook ids) per kind of violation.
	Examples map[string][]string

	leakedKnown int // reservations leaked by orders the API still knows
}

// Violations is the sum of every count but duplicates.
func (r *Report) Violations() int {
	return r.Lost + r.Stuck + r.ExecutedTwice + r.OutcomeDisagrees + r.ReservationsLeaked +
		r.WebhooksMissing + r.BadSignatures + r.WrongTenant + r.ExitedLate
}

// settled reports whether waiting longer cannot change the report: nothing in flight,
// no webhook or release still to come. Losses and what follows from them stay.
func (r *Report) settled() bool {
	return r.Stuck == 0 && r.WebhooksMissing == 0 && r.leakedKnown == 0 && r.OutcomeDisagrees == 0
}

func (r *Report) example(kind, id string) {
	if r.Examples == nil {
		r.Examples = make(map[string][]string)
	}
	if len(r.Examples[kind]) < 3 {
		r.Examples[kind] = append(r.Examples[kind], id)
	}
}

// Checker checks a scenario. It remembers what cannot change any more (an order's
// terminal status), so that waiting re-reads only the rest.
type Checker struct {
	API      API
	Ledger   Ledger
	Receiver Receiver
	// Lister, when set, lists each tenant's orders to find those no client got a 202 for
	// (a placement answered by nobody, then placed again): when one of them was filled as
	// well as the order its client got, that intent was executed twice.
	Lister Lister
	// Concurrency is the number of reads in flight. Defaults to 8.
	Concurrency int

	final map[string]*Order // orders seen terminal, by id
}

// eventType is the webhook event of a terminal status.
func eventType(status string) string { return "order." + status }

// Check reads every accepted order once and counts the violations as they stand now.
func (c *Checker) Check(ctx context.Context, in Input) (*Report, error) {
	if c.final == nil {
		c.final = make(map[string]*Order)
	}
	deliveries, err := c.Receiver.Deliveries()
	if err != nil {
		return nil, fmt.Errorf("read the receiver's log: %w", err)
	}
	accepted := uniqueOrders(in.Accepted)
	type read struct {
		order  *Order
		lost   bool
		ledger *LedgerEntry
		err    error
	}
	reads := make([]read, len(accepted))
	n := c.Concurrency
	if n <= 0 {
		n = 8
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, a := range accepted {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := &reads[i]
			if o := c.final[a.OrderID]; o != nil {
				r.order = o
			} else {
				o, err := c.API.Order(ctx, a.Tenant, a.OrderID)
				switch {
				case errors.Is(err, ErrNotFound):
					r.lost = true
				case err != nil:
					r.err = fmt.Errorf("read order %s: %w", a.OrderID, err)
				default:
					r.order = o
				}
			}
			l, err := c.Ledger.Order(ctx, a.OrderID)
			switch {
			case errors.Is(err, ErrNotFound):
				r.ledger = &LedgerEntry{}
			case err != nil:
				r.err = errors.Join(r.err, fmt.Errorf("read the ledger of %s: %w", a.OrderID, err))
			default:
				r.ledger = l
			}
		})
	}
	wg.Wait()

	rep := &Report{Scenario: in.Scenario, Accepted: len(accepted)}
	var last time.Time
	filled := make(map[[2]string]int) // intent → orders filled downstream
	orderTenant := make(map[string]string, len(accepted))
	first := firstValid(deliveries)
	for i, a := range accepted {
		r := reads[i]
		orderTenant[a.OrderID] = a.Tenant
		if r.err != nil {
			// An unreadable order is in flight as far as anyone outside can tell.
			rep.Stuck++
			rep.example("stuck", a.OrderID+" ("+r.err.Error()+")")
			continue
		}
		if r.ledger.Executions > 1 {
			rep.ExecutedTwice++
			rep.example("executed twice", a.OrderID)
		}
		if r.ledger.Executions > 0 {
			filled[[2]string{a.Tenant, a.Key}]++
		}
		switch {
		case r.lost:
			rep.Lost++
			if r.ledger.Executions > 0 {
				rep.LostExecuted++
				rep.example("lost", a.OrderID+" (executed downstream)")
			} else {
				rep.example("lost", a.OrderID)
			}
			if r.ledger.ReservationOpen {
				rep.ReservationsLeaked++
				rep.example("reservations leaked", a.OrderID+" (lost)")
			}
			continue
		case !r.order.Terminal():
			rep.Stuck++
			rep.example("stuck", a.OrderID+" ("+r.order.Status+")")
			continue
		}
		c.final[a.OrderID] = r.order
		if r.order.UpdatedAt.After(last) {
			last, rep.Last = r.order.UpdatedAt, a
		}
		executed := r.order.Status == "executed"
		if executed != (r.ledger.Executions > 0) {
			rep.OutcomeDisagrees++
			rep.example("outcome disagrees", fmt.Sprintf("%s (%s, %d fills)", a.OrderID, r.order.Status, r.ledger.Executions))
		}
		if !executed && r.ledger.ReservationOpen {
			rep.ReservationsLeaked++
			rep.leakedKnown++
			rep.example("reservations leaked", a.OrderID+" ("+r.order.Status+")")
		}
		if in.Subscribed[a.Tenant] {
			got, ok := first[[3]string{a.Tenant, a.OrderID, eventType(r.order.Status)}]
			if !ok {
				rep.WebhooksMissing++
				rep.example("webhooks missing", a.OrderID+" ("+eventType(r.order.Status)+")")
			} else {
				if got.After(last) {
					last, rep.Last = got, a
				}
			}
		}
	}
	if c.Lister != nil {
		if err := c.countUnacknowledged(ctx, rep, accepted, filled); err != nil {
			return nil, err
		}
	}
	for intent, n := range filled {
		if n > 1 {
			rep.ExecutedTwice++
			rep.example("executed twice", fmt.Sprintf("intent %s/%s filled as %d orders", intent[0], intent[1], n))
		}
	}
	countDeliveries(rep, deliveries, orderTenant)
	for _, e := range in.Exits {
		rep.SlowestExit = max(rep.SlowestExit, e.Took)
		if e.Late() {
			rep.ExitedLate++
			rep.example("exited late", fmt.Sprintf("%s (exit %d after %s, grace %s)", e.Process, e.Code, e.Took.Round(time.Millisecond), e.Grace))
		}
	}
	if !in.LastFault.IsZero() && last.After(in.LastFault) {
		rep.Finish = last.Sub(in.LastFault)
	}
	return rep, nil
}

// countUnacknowledged lists every tenant's orders and counts those no client got a 202
// for; those filled downstream count towards their intent's fills.
func (c *Checker) countUnacknowledged(ctx context.Context, rep *Report, accepted []Accepted, filled map[[2]string]int) error {
	known := make(map[string]bool, len(accepted))
	var tenants []string
	for _, a := range accepted {
		known[a.OrderID] = true
		if !slices.Contains(tenants, a.Tenant) {
			tenants = append(tenants, a.Tenant)
		}
	}
	for _, tenant := range tenants {
		list, err := c.Lister.List(ctx, tenant)
		if err != nil {
			return fmt.Errorf("list %s's orders: %w", tenant, err)
		}
		for _, o := range list {
			if known[o.ID] {
				continue
			}
			rep.Unacknowledged++
			rep.example("unacknowledged", fmt.Sprintf("%s (%s, intent %s)", o.ID, o.Status, o.Intent))
			executed := o.Status == "executed"
			if !executed {
				l, err := c.Ledger.Order(ctx, o.ID)
				executed = err == nil && l.Executions > 0
			}
			if executed && o.Intent != "" {
				filled[[2]string{tenant, o.Intent}]++
			}
		}
	}
	return nil
}

// countDeliveries counts duplicates, bad signatures and deliveries to the wrong tenant.
func countDeliveries(rep *Report, deliveries []Delivery, orderTenant map[string]string) {
	seen := make(map[[3]string]bool) // tenant, order, type
	for _, d := range deliveries {
		if !d.SignatureValid {
			rep.BadSignatures++
			rep.example("bad signatures", d.WebhookID)
			continue
		}
		if t, ok := orderTenant[d.OrderID]; ok && t != d.Tenant {
			rep.WrongTenant++
			rep.example("wrong tenant", fmt.Sprintf("%s of %s's order %s at %s's endpoint", d.WebhookID, t, d.OrderID, d.Tenant))
			continue
		}
		k := [3]string{d.Tenant, d.OrderID, d.Type}
		if seen[k] {
			rep.DuplicateWebhooks++
			continue
		}
		seen[k] = true
	}
}

// firstValid is when the first correctly signed delivery of each event (tenant, order,
// type) reached the tenant's endpoint.
func firstValid(deliveries []Delivery) map[[3]string]time.Time {
	first := make(map[[3]string]time.Time)
	for _, d := range deliveries {
		if !d.SignatureValid {
			continue
		}
		k := [3]string{d.Tenant, d.OrderID, d.Type}
		if at, ok := first[k]; !ok || d.At.Before(at) {
			first[k] = d.At
		}
	}
	return first
}

// uniqueOrders keeps the first placement of each order id: a replayed 202 names the
// order the first one created.
func uniqueOrders(in []Accepted) []Accepted {
	seen := make(map[string]bool, len(in))
	out := make([]Accepted, 0, len(in))
	for _, a := range in {
		if !seen[a.OrderID] {
			seen[a.OrderID] = true
			out = append(out, a)
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Wait checks again and again until the report cannot change any more (nothing in
// flight, every webhook and release arrived; only losses may remain) or until within
// has passed, and returns the last report.
func (c *Checker) Wait(ctx context.Context, in Input, within time.Duration) (*Report, error) {
	deadline := time.Now().Add(within)
	for {
		rep, err := c.Check(ctx, in)
		if err != nil {
			return nil, err
		}
		if rep.settled() || time.Now().After(deadline) {
			return rep, nil
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(500 * time.Millisecond): // poll with a deadline: the orders end in other processes
		}
	}
}

// columns are the table's headings, in order.
var columns = []string{"scenario", "accepted", "without a 202", "lost", "stuck", "executed twice", "outcome disagrees",
	"reservations leaked", "webhooks missing", "duplicate webhooks", "bad signatures", "wrong tenant",
	"exited late", "finish after last fault"}

func (r *Report) cells() []string {
	return []string{r.Scenario, itoa(r.Accepted), itoa(r.Unacknowledged), itoa(r.Lost), itoa(r.Stuck), itoa(r.ExecutedTwice),
		itoa(r.OutcomeDisagrees), itoa(r.ReservationsLeaked), itoa(r.WebhooksMissing),
		itoa(r.DuplicateWebhooks), itoa(r.BadSignatures), itoa(r.WrongTenant), itoa(r.ExitedLate), r.Finish.Round(100 * time.Millisecond).String()}
}

func itoa(n int) string { return fmt.Sprint(n) }

// String is the report as a table of one scenario, with examples of its violations.
func (r *Report) String() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintln(w, strings.Join(columns[1:], "\t|"))
	fmt.Fprintln(w, strings.Join(r.cells()[1:], "\t|"))
	w.Flush()
	if r.LostExecuted > 0 {
		fmt.Fprintf(&b, "%d of the %d lost orders were executed downstream\n", r.LostExecuted, r.Lost)
	}
	if r.SlowestExit > 0 {
		fmt.Fprintf(&b, "the slowest process stopped with SIGTERM exited after %s\n", r.SlowestExit.Round(time.Millisecond))
	}
	kinds := make([]string, 0, len(r.Examples))
	for k := range r.Examples {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s, such as: %s\n", k, strings.Join(r.Examples[k], "; "))
	}
	return "scenario " + r.Scenario + "\n" + b.String()
}

// Markdown is reports as one Markdown table, a row per scenario.
func Markdown(reports []*Report) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(columns, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(columns)) + "\n")
	for _, r := range reports {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return b.String()
}
