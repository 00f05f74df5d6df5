// Package sim simulates the portfolio and execution services that asyncgate calls, for
// `asyncgate dev`, tests and benchmarks.
//
// One [Sim] is an [http.Handler] that serves both services, so both downstream base URLs
// can point at it:
//
//	GET  /portfolios/{account}        cash, reserved, available funds and positions of an account
//	                                  (404 unknown_account with Config.ClosedAccounts)
//	POST /reservations                reserve funds, idempotent on reservation_id (409 insufficient_funds,
//	                                  404 unknown_account)
//	POST /reservations/{id}/release   release them, idempotent; an unknown id answers "unknown"
//	POST /executions                  execute an order, idempotent on execution_id (422 refused)
//
// and a small admin API:
//
//	GET|PUT /_sim/faults              faults of both services: {"portfolio": {…}, "execution": {…}}
//	GET|PUT /_sim/faults/{service}    faults of one service ("portfolio" or "execution")
//	GET     /_sim/stats               the counters of [Stats]
//	GET     /_sim/orders/{order_id}   the ledger of one order: [OrderLedger] (404 for an order never seen)
//	GET     /_sim/orders              every order's ledger, {"data": [...]}, oldest first; ?tenant= filters
//
// Tests serve it with httptest.NewServer(s); `asyncgate sim` and `asyncgate dev` with
// [Sim.Start].
//
// # Tenants, accounts and orders
//
// Every call to the services names its tenant in the [HeaderTenant] header; a call without
// one is refused with 400. The books are kept per tenant and account: tenant B's "acc_1001"
// is not tenant A's, and reservation and execution ids are idempotency keys within a tenant.
// An account seen for the first time by a tenant starts with [Config.DefaultCash], unless
// [Config].ClosedAccounts makes the tenant's accounts only those given a balance.
//
// A call made for an order names it in the [HeaderOrder] header (required on reservations
// and executions). The simulator keeps a ledger per order from it, so that effects
// downstream can be counted: how often the order was executed, whether a reservation of it
// still holds funds.
//
// A fill settles the order's reservation: the reserved funds stop counting as reserved, the
// cash pays for a buy (or receives a sale), and the position in the symbol moves by the
// quantity. A portfolio's reserved is therefore the funds of orders that are neither
// executed nor released. Positions are not checked: a sell may go short.
//
// # Faults
//
// [Faults] are set per service at run time, through [Sim.SetFaults] or the admin API, and apply
// to the requests that arrive afterwards. Latency delays a request before anything else happens
// (a request whose client gives up meanwhile performs nothing). Outage and ErrorRate answer
// instead of the service and perform nothing. Garbage and SlowDrip spoil the answer of an
// operation that was performed: the client sees a bad or late answer to something that
// happened, the case idempotency keys exist for.
//
// # Counters
//
// Every request is counted, also the ones a fault answered. Operations are idempotent by id, so
// per id an operation is performed at most once: [Sim.Executions] stays at most 1 however often
// a client retries. To prove that a client reused its id across retries, compare
// [Stats].Executions with the number of orders instead.
package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"mime"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Config configures a [Sim]. The zero value is ready to use.
type Config struct {
	// DefaultCash is the cash of an account the first time it is seen. Defaults to 1,000,000.
	DefaultCash float64

	// ClosedAccounts makes a tenant's accounts only those opened by [Sim.SetTenantBalance]
	// or [Sim.SetBalance]; any other answers 404 unknown_account, as a real portfolio
	// service answers for an account that is not the tenant's. Defaults to false: an
	// account opens on its tenant's first use, with DefaultCash.
	ClosedAccounts bool

	// MarketPrice is the fill price of an execution without a limit price. Defaults to 100.
	MarketPrice float64

	// Rand draws the requests that [Faults].ErrorRate fails; the Sim uses it under its lock.
	// Defaults to a generator with a fixed seed, so the same requests in the same order
	// fail the same way in every run.
	Rand *rand.Rand

	// NowFunc gives the time of as_of and filled_at. Defaults to time.Now.
	NowFunc func() time.Time

	// Logger receives changes of the faults. Defaults to discarding everything.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DefaultCash <= 0 {
		c.DefaultCash = 1_000_000
	}
	if c.MarketPrice <= 0 {
		c.MarketPrice = 100
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(1, 2))
	}
	if c.NowFunc == nil {
		c.NowFunc = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Stats counts requests per endpoint and the operations they performed.
type Stats struct {
	PortfolioRequests int `json:"portfolio_requests"` // GET /portfolios/{account}
	ReserveRequests   int `json:"reserve_requests"`   // POST /reservations
	ReleaseRequests   int `json:"release_requests"`   // POST /reservations/{id}/release
	ExecuteRequests   int `json:"execute_requests"`   // POST /executions
	Faulted           int `json:"faulted"`            // requests answered by an outage or ErrorRate
	Reservations      int `json:"reservations"`       // funds reserved
	Releases          int `json:"releases"`           // reservations released
	Settlements       int `json:"settlements"`        // reservations consumed by a fill
	Executions        int `json:"executions"`         // orders executed
}

// Sim is the simulated state of both services and the http.Handler that serves them.
// It is safe for concurrent use.
type Sim struct {
	cfg Config
	mux *http.ServeMux

	mu           sync.Mutex
	faults       map[Service]Faults
	balances     map[string]float64 // SetBalance: cash of an account id in every tenant
	accounts     map[key]*account
	reservations map[key]*reservation
	executions   map[key]*execution
	ledger       map[key]*OrderLedger
	byOrder      map[key][]string    // the ids of each order's reservations
	orderTenants map[string][]string // the tenants that sent each order id
	orderSeen    []key               // the ledger's keys, in the order first seen
	stats        Stats
}

// key names something of one tenant: an account, a reservation, an execution or an order.
type key struct{ tenant, id string }

type account struct {
	cash, reserved float64
	positions      map[string]float64
}

type reservationState int

const (
	notReserved reservationState = iota // seen, nothing performed yet
	held
	refused
	released
	settled // consumed by the fill of its order
)

type reservation struct {
	state   reservationState
	account string
	amount  float64
	order   string
}

type execution struct {
	requests  int
	performed int
	code      int            // the first answer, repeated for the same id
	body      map[string]any // nil until performed or refused
}

// OrderLedger is what the simulator saw of one order of one tenant: every call the gateway
// made for it, keyed by the order id it sent in [HeaderOrder].
type OrderLedger struct {
	OrderID   string `json:"order_id"`
	Tenant    string `json:"tenant"`
	AccountID string `json:"account_id"`

	// Executions is how many times the execution service filled this order: 1 for an
	// executed order, 0 otherwise, whatever the number of retries.
	Executions int `json:"executions"`
	// ReservationOpen is whether a reservation of this order still holds funds.
	ReservationOpen bool `json:"reservation_open"`
	// Reservations is how many reservations held funds for this order (usually 0 or 1).
	Reservations int `json:"reservations"`
	// Releases is how many of them were released.
	Releases int `json:"releases"`
	// Settlements is how many of them a fill consumed.
	Settlements int `json:"settlements"`

	// The requests that arrived for this order, also those a fault answered.
	ReserveRequests   int `json:"reserve_requests"`
	ReleaseRequests   int `json:"release_requests"`
	ExecutionRequests int `json:"execution_requests"`

	open int // reservations held now
}

// New returns a Sim with no faults.
func New(cfg Config) *Sim {
	s := &Sim{cfg: cfg.withDefaults()}
	s.resetLocked()

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /portfolios/{account}", s.handlePortfolio)
	s.mux.HandleFunc("POST /reservations", s.handleReserve)
	s.mux.HandleFunc("POST /reservations/{id}/release", s.handleRelease)
	s.mux.HandleFunc("POST /executions", s.handleExecute)
	s.mux.HandleFunc("GET /_sim/faults", s.handleGetFaults)
	s.mux.HandleFunc("PUT /_sim/faults", s.handlePutFaults)
	s.mux.HandleFunc("GET /_sim/faults/{service}", s.handleGetServiceFaults)
	s.mux.HandleFunc("PUT /_sim/faults/{service}", s.handlePutServiceFaults)
	s.mux.HandleFunc("GET /_sim/stats", s.handleStats)
	s.mux.HandleFunc("GET /_sim/orders/{order_id}", s.handleLedger)
	s.mux.HandleFunc("GET /_sim/orders", s.handleLedgers)
	return s
}

// ServeHTTP serves both services and the admin API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// SetBalance sets the cash of the account with this id in every tenant: of those that
// have it now, and of those that see it first later. Reservations stay held. Tests that
// care about one tenant use [Sim.SetTenantBalance].
func (s *Sim) SetBalance(account string, cash float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.balances[account] = cash
	for k, a := range s.accounts {
		if k.id == account {
			a.cash = cash
		}
	}
}

// SetTenantBalance sets the cash of one tenant's account, creating it if needed. Its
// reservations stay held.
func (s *Sim) SetTenantBalance(tenant, account string, cash float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.account(tenant, account).cash = cash
}

// Account is one tenant's account as the simulator holds it.
type Account struct {
	Cash      float64            `json:"cash"`
	Reserved  float64            `json:"reserved"`
	Positions map[string]float64 `json:"positions"`
}

// Account returns the books of a tenant's account, and false when the tenant never used it.
// Reading it creates nothing.
func (s *Sim) Account(tenant, account string) (Account, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[key{tenant, account}]
	if !ok {
		return Account{}, false
	}
	return Account{Cash: a.cash, Reserved: a.reserved, Positions: maps.Clone(a.positions)}, true
}

// Ledger returns what the simulator saw of an order of tenant, and false for an order it
// never saw.
func (s *Sim) Ledger(tenant, orderID string) (OrderLedger, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.ledger[key{tenant, orderID}]
	if !ok {
		return OrderLedger{}, false
	}
	return l.view(), true
}

// Ledgers returns the ledgers of every order the simulator saw, oldest first.
func (s *Sim) Ledgers() []OrderLedger {
	return s.ledgers("")
}

// ledgers returns the ledgers of tenant's orders (of all with ""), oldest first.
func (s *Sim) ledgers(tenant string) []OrderLedger {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]OrderLedger, 0, len(s.orderSeen))
	for _, k := range s.orderSeen {
		if tenant == "" || k.tenant == tenant {
			out = append(out, s.ledger[k].view())
		}
	}
	return out
}

func (l *OrderLedger) view() OrderLedger {
	v := *l
	v.ReservationOpen, v.open = l.open > 0, 0
	return v
}

// Executions reports how many times the execution with id was performed: 0 or 1 per
// tenant, summed over the tenants that used the id.
func (s *Sim) Executions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.executions {
		if k.id == id {
			n += e.performed
		}
	}
	return n
}

// ExecutionRequests reports how many requests for the execution with id arrived, in any
// tenant, including those a fault answered or that were invalid.
func (s *Sim) ExecutionRequests(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.executions {
		if k.id == id {
			n += e.requests
		}
	}
	return n
}

// Reserved reports whether a reservation with id currently holds funds, in any tenant.
func (s *Sim) Reserved(id string) bool {
	return s.anyReservation(id, held)
}

// Released reports whether a reservation with id was reserved and then released, in any
// tenant.
func (s *Sim) Released(id string) bool {
	return s.anyReservation(id, released)
}

// Settled reports whether a reservation with id was consumed by the fill of its order, in
// any tenant.
func (s *Sim) Settled(id string) bool {
	return s.anyReservation(id, settled)
}

func (s *Sim) anyReservation(id string, state reservationState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.reservations {
		if k.id == id && r.state == state {
			return true
		}
	}
	return false
}

// Stats returns the counters since New or the last Reset.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Reset forgets every account, reservation, execution, counter and fault, as if the Sim
// were new. The random generator goes on where it was.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *Sim) resetLocked() {
	s.faults = map[Service]Faults{Portfolio: {}, Execution: {}}
	s.balances = make(map[string]float64)
	s.accounts = make(map[key]*account)
	s.reservations = make(map[key]*reservation)
	s.executions = make(map[key]*execution)
	s.ledger = make(map[key]*OrderLedger)
	s.byOrder = make(map[key][]string)
	s.orderTenants = make(map[string][]string)
	s.orderSeen = nil
	s.stats = Stats{}
}

// account returns the tenant's account with id, creating it with the default cash (or the
// cash SetBalance gave its id). s.mu must be held.
func (s *Sim) account(tenant, id string) *account {
	k := key{tenant, id}
	a, ok := s.accounts[k]
	if !ok {
		cash, set := s.balances[id]
		if !set {
			cash = s.cfg.DefaultCash
		}
		a = &account{cash: cash, positions: make(map[string]float64)}
		s.accounts[k] = a
	}
	return a
}

// openAccount returns the tenant's account with id, opening it on first use unless
// ClosedAccounts is set and it was never given a balance. s.mu must be held.
func (s *Sim) openAccount(tenant, id string) (*account, bool) {
	if a, ok := s.accounts[key{tenant, id}]; ok {
		return a, true
	}
	if _, set := s.balances[id]; s.cfg.ClosedAccounts && !set {
		return nil, false
	}
	return s.account(tenant, id), true
}

func unknownAccount(id string) answer {
	return errorAnswer(http.StatusNotFound, "unknown_account", fmt.Sprintf("the tenant has no account %q", id))
}

// order returns the ledger of the tenant's order, creating it; nil when the call named no
// order. s.mu must be held.
func (s *Sim) order(tenant, id string) *OrderLedger {
	if id == "" {
		return nil
	}
	k := key{tenant, id}
	l, ok := s.ledger[k]
	if !ok {
		l = &OrderLedger{OrderID: id, Tenant: tenant}
		s.ledger[k] = l
		s.orderTenants[id] = append(s.orderTenants[id], tenant)
		s.orderSeen = append(s.orderSeen, k)
	}
	return l
}

// Headers of the calls to the services.
const (
	// HeaderTenant names the tenant a call is made for. Every call must carry it.
	HeaderTenant = "X-Tenant-Id"
	// HeaderOrder names the order a call is made for; required on reservations and
	// executions, and the key of the ledger.
	HeaderOrder = "X-Order-Id"
)

// caller is who a request to the services is for.
type caller struct{ tenant, order string }

func callerOf(r *http.Request) (caller, error) {
	c := caller{tenant: r.Header.Get(HeaderTenant), order: r.Header.Get(HeaderOrder)}
	if c.tenant == "" {
		return c, errors.New(HeaderTenant + " header is required: every call names its tenant")
	}
	return c, nil
}

// answer is what a service says to one request, before faults spoil it.
type answer struct {
	code int
	body map[string]any
	// required is a field the client needs, dropped by GarbageMissingField.
	required string
}

func errorAnswer(code int, kind, detail string) answer {
	body := map[string]any{"error": kind}
	if detail != "" {
		body["detail"] = detail
	}
	return answer{code: code, body: body, required: "error"}
}

func (s *Sim) handlePortfolio(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("account")
	who, bad := callerOf(r)
	f, fail := s.arrive(Portfolio, func() { s.stats.PortfolioRequests++ })
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}

	s.mu.Lock()
	a, ok := s.openAccount(who.tenant, id)
	if !ok {
		s.mu.Unlock()
		s.reply(w, r, f, unknownAccount(id))
		return
	}
	ans := answer{code: http.StatusOK, required: "available", body: map[string]any{
		"account_id": id,
		"cash":       a.cash,
		"reserved":   a.reserved,
		"available":  a.cash - a.reserved,
		"positions":  maps.Clone(a.positions),
		"as_of":      s.cfg.NowFunc().UTC().Format(time.RFC3339Nano),
	}}
	s.mu.Unlock()
	s.reply(w, r, f, ans)
}

type reserveRequest struct {
	ReservationID string   `json:"reservation_id"`
	AccountID     string   `json:"account_id"`
	Amount        *float64 `json:"amount"`
}

func (req *reserveRequest) validate() error {
	switch {
	case req.ReservationID == "":
		return errors.New("reservation_id is required")
	case req.AccountID == "":
		return errors.New("account_id is required")
	case req.Amount == nil:
		return errors.New("amount is required")
	case *req.Amount <= 0:
		return errors.New("amount must be positive")
	}
	return nil
}

func (s *Sim) handleReserve(w http.ResponseWriter, r *http.Request) {
	var req reserveRequest
	who, bad := callerOf(r)
	if bad == nil {
		bad = decodeRequest(r, &req, func() string { return req.ReservationID })
	}
	if bad == nil {
		bad = req.validate()
	}
	if bad == nil && who.order == "" {
		bad = errors.New(HeaderOrder + " header is required: a reservation is made for an order")
	}
	f, fail := s.arrive(Portfolio, func() {
		s.stats.ReserveRequests++
		if who.tenant == "" {
			return
		}
		if l := s.order(who.tenant, who.order); l != nil {
			l.ReserveRequests++
		}
	})
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}
	s.reply(w, r, f, s.reserve(who, req.ReservationID, req.AccountID, *req.Amount))
}

func (s *Sim) reserve(who caller, id, accountID string, amount float64) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	k := key{who.tenant, id}
	res, ok := s.reservations[k]
	if !ok {
		res = &reservation{}
		s.reservations[k] = res
	}
	switch res.state {
	case held, released, settled:
		return reservedAnswer(http.StatusOK, id, res)
	case refused:
		return errorAnswer(http.StatusConflict, "insufficient_funds", "")
	}

	l := s.order(who.tenant, who.order)
	l.AccountID = accountID
	a, ok := s.openAccount(who.tenant, accountID)
	if !ok {
		delete(s.reservations, k) // nothing happened: the same id may be tried again
		return unknownAccount(accountID)
	}
	if a.cash-a.reserved < amount {
		res.state = refused
		return errorAnswer(http.StatusConflict, "insufficient_funds", "")
	}
	a.reserved += amount
	*res = reservation{state: held, account: accountID, amount: amount, order: who.order}
	ord := key{who.tenant, who.order}
	s.byOrder[ord] = append(s.byOrder[ord], id)
	l.Reservations++
	l.open++
	s.stats.Reservations++
	return reservedAnswer(http.StatusCreated, id, res)
}

func reservedAnswer(code int, id string, res *reservation) answer {
	return answer{code: code, required: "status", body: map[string]any{
		"reservation_id": id,
		"account_id":     res.account,
		"amount":         res.amount,
		"status":         "reserved",
	}}
}

func (s *Sim) handleRelease(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	who, bad := callerOf(r)
	if key := r.Header.Get("Idempotency-Key"); bad == nil && key != "" && key != id {
		bad = errors.New("Idempotency-Key differs from the reservation id")
	}
	f, fail := s.arrive(Portfolio, func() {
		s.stats.ReleaseRequests++
		if who.tenant == "" {
			return
		}
		if l := s.order(who.tenant, who.order); l != nil {
			l.ReleaseRequests++
		}
	})
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}
	s.reply(w, r, f, s.release(who, id))
}

// release frees a held reservation. A reservation a fill consumed answers "settled": there
// is nothing left to free.
func (s *Sim) release(who caller, id string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	status := "unknown"
	res, ok := s.reservations[key{who.tenant, id}]
	if ok && who.order != "" && res.order != "" && who.order != res.order {
		return errorAnswer(http.StatusBadRequest, "bad_request",
			fmt.Sprintf("reservation %s belongs to order %s, not %s", id, res.order, who.order))
	}
	switch {
	case ok && res.state == held:
		s.account(who.tenant, res.account).reserved -= res.amount
		res.state = released
		if l := s.order(who.tenant, res.order); l != nil {
			l.Releases++
			l.open--
		}
		s.stats.Releases++
		status = "released"
	case ok && res.state == released:
		status = "released"
	case ok && res.state == settled:
		status = "settled"
	}
	return answer{code: http.StatusOK, required: "status", body: map[string]any{
		"reservation_id": id,
		"status":         status,
	}}
}

type executeRequest struct {
	ExecutionID string   `json:"execution_id"`
	AccountID   string   `json:"account_id"`
	Symbol      string   `json:"symbol"`
	Side        string   `json:"side"`
	Quantity    *float64 `json:"quantity"`
	LimitPrice  *float64 `json:"limit_price"`
}

func (req *executeRequest) validate() error {
	switch {
	case req.ExecutionID == "":
		return errors.New("execution_id is required")
	case req.AccountID == "":
		return errors.New("account_id is required")
	case req.Symbol == "":
		return errors.New("symbol is required")
	case req.Side != "buy" && req.Side != "sell":
		return errors.New(`side must be "buy" or "sell"`)
	case req.Quantity == nil:
		return errors.New("quantity is required")
	case *req.Quantity <= 0:
		return errors.New("quantity must be positive")
	case req.LimitPrice != nil && *req.LimitPrice <= 0:
		return errors.New("limit_price must be positive")
	}
	return nil
}

func (s *Sim) handleExecute(w http.ResponseWriter, r *http.Request) {
	var req executeRequest
	who, bad := callerOf(r)
	if bad == nil {
		bad = decodeRequest(r, &req, func() string { return req.ExecutionID })
	}
	if bad == nil {
		bad = req.validate()
	}
	if bad == nil && who.order == "" {
		bad = errors.New(HeaderOrder + " header is required: an execution is made for an order")
	}
	f, fail := s.arrive(Execution, func() {
		s.stats.ExecuteRequests++
		if who.tenant == "" {
			return
		}
		if req.ExecutionID != "" {
			s.execution(who.tenant, req.ExecutionID).requests++
		}
		if l := s.order(who.tenant, who.order); l != nil {
			l.ExecutionRequests++
		}
	})
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}
	s.reply(w, r, f, s.execute(who, &req, f.RefuseSymbols))
}

// execution returns the tenant's execution with id, creating it. s.mu must be held.
func (s *Sim) execution(tenant, id string) *execution {
	k := key{tenant, id}
	e, ok := s.executions[k]
	if !ok {
		e = &execution{}
		s.executions[k] = e
	}
	return e
}

func (s *Sim) execute(who caller, req *executeRequest, refuse []string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	e := s.execution(who.tenant, req.ExecutionID)
	if e.body != nil {
		code := e.code
		if code == http.StatusCreated {
			code = http.StatusOK
		}
		return answer{code: code, body: e.body, required: requiredOf(e.code)}
	}

	reason := ""
	if slices.Contains(refuse, req.Symbol) {
		reason = fmt.Sprintf("symbol %s is not tradable", req.Symbol)
	} else if _, ok := s.openAccount(who.tenant, req.AccountID); !ok {
		reason = fmt.Sprintf("the tenant has no account %q", req.AccountID)
	}
	if reason != "" {
		e.code = http.StatusUnprocessableEntity
		e.body = map[string]any{"error": "refused", "reason": reason}
		return answer{code: e.code, body: e.body, required: "error"}
	}

	price := s.cfg.MarketPrice
	if req.LimitPrice != nil {
		price = *req.LimitPrice
	}
	e.performed++
	s.stats.Executions++
	l := s.order(who.tenant, who.order)
	l.Executions++
	if l.AccountID == "" {
		l.AccountID = req.AccountID
	}
	s.settle(who, l, req, price)
	e.code = http.StatusCreated
	e.body = map[string]any{
		"execution_id": req.ExecutionID,
		"status":       "filled",
		"symbol":       req.Symbol,
		"side":         req.Side,
		"quantity":     *req.Quantity,
		"price":        price,
		"filled_at":    s.cfg.NowFunc().UTC().Format(time.RFC3339Nano),
	}
	return answer{code: e.code, body: e.body, required: "price"}
}

// settle books a fill: the order's held reservations stop counting as reserved (the fill
// consumes them), the cash pays for a buy or receives a sale, and the position moves by
// the quantity. s.mu must be held.
func (s *Sim) settle(who caller, l *OrderLedger, req *executeRequest, price float64) {
	for _, id := range s.byOrder[key{who.tenant, who.order}] {
		res := s.reservations[key{who.tenant, id}]
		if res.state != held {
			continue
		}
		s.account(who.tenant, res.account).reserved -= res.amount
		res.state = settled
		l.open--
		l.Settlements++
		s.stats.Settlements++
	}
	a := s.account(who.tenant, req.AccountID)
	qty := *req.Quantity
	if req.Side == "sell" {
		qty = -qty
	}
	a.cash -= qty * price
	a.positions[req.Symbol] += qty
}

func requiredOf(code int) string {
	if code == http.StatusCreated {
		return "price"
	}
	return "error"
}

// decodeRequest decodes a JSON request body strictly into v, and checks that an
// Idempotency-Key header, if any, matches the id in the body.
func decodeRequest(r *http.Request, v any, id func() string) error {
	const maxRequestBytes = 64 << 10
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return errors.New("Content-Type must be application/json")
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode body: data after the JSON object")
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" && key != id() {
		return errors.New("Idempotency-Key differs from the id in the body")
	}
	return nil
}

// writeJSON writes v with code; admin answers and fault answers use it.
func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

// handleLedger is GET /_sim/orders/{order_id}: the ledger of the order. With ?tenant= it is
// the order of that tenant; without, the one order of that id in any tenant (order ids
// minted by the gateway are unique, so there is one).
func (s *Sim) handleLedger(w http.ResponseWriter, r *http.Request) {
	id, tenant := r.PathValue("order_id"), r.URL.Query().Get("tenant")
	s.mu.Lock()
	var found []OrderLedger
	for _, t := range s.orderTenants[id] {
		if tenant == "" || t == tenant {
			found = append(found, s.ledger[key{t, id}].view())
		}
	}
	s.mu.Unlock()
	switch len(found) {
	case 1:
		writeJSON(w, http.StatusOK, found[0])
	case 0:
		writeProblem(w, http.StatusNotFound, "not_found", fmt.Sprintf("the simulator never saw order %q", id))
	default:
		writeProblem(w, http.StatusConflict, "ambiguous",
			fmt.Sprintf("%d tenants sent order %q; name one with ?tenant=", len(found), id))
	}
}

// handleLedgers is GET /_sim/orders: every order's ledger, or one tenant's with ?tenant=,
// so that a checker can also find effects of orders it never heard of.
func (s *Sim) handleLedgers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"data": s.ledgers(r.URL.Query().Get("tenant"))})
}

// writeProblem writes an RFC 9457 problem.
func writeProblem(w http.ResponseWriter, code int, kind, detail string) {
	data, err := json.Marshal(map[string]any{
		"type":   "https://asyncgate.dev/problems/sim/" + kind,
		"title":  http.StatusText(code),
		"status": code,
		"code":   kind,
		"detail": detail,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}
