// Package sim simulates the portfolio and execution services that asyncgate calls, for
// `asyncgate dev`, tests and benchmarks.
//
// One [Sim] is an [http.Handler] that serves both services, so both downstream base URLs
// can point at it:
//
//	GET  /portfolios/{account}        cash, reserved and available funds of an account
//	POST /reservations                reserve funds, idempotent on reservation_id (409 insufficient_funds)
//	POST /reservations/{id}/release   release them, idempotent; an unknown id answers "unknown"
//	POST /executions                  execute an order, idempotent on execution_id (422 refused)
//
// and a small admin API:
//
//	GET|PUT /_sim/faults              faults of both services: {"portfolio": {…}, "execution": {…}}
//	GET|PUT /_sim/faults/{service}    faults of one service ("portfolio" or "execution")
//	GET     /_sim/stats               the counters of [Stats]
//
// Tests serve it with httptest.NewServer(s); `asyncgate sim` and `asyncgate dev` with
// [Sim.Start]. An account seen for the first time starts with [Config.DefaultCash]. Executions do not move
// cash: the simulator models reservations, not settlement.
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
	Executions        int `json:"executions"`         // orders executed
}

// Sim is the simulated state of both services and the http.Handler that serves them.
// It is safe for concurrent use.
type Sim struct {
	cfg Config
	mux *http.ServeMux

	mu           sync.Mutex
	faults       map[Service]Faults
	accounts     map[string]*account
	reservations map[string]*reservation
	executions   map[string]*execution
	stats        Stats
}

type account struct {
	cash, reserved float64
}

type reservationState int

const (
	notReserved reservationState = iota // seen, nothing performed yet
	held
	refused
	released
)

type reservation struct {
	state   reservationState
	account string
	amount  float64
}

type execution struct {
	requests  int
	performed int
	code      int            // the first answer, repeated for the same id
	body      map[string]any // nil until performed or refused
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
	s.mux.HandleFunc("GET /_sim/orders/{order_id}", s.handleOrderLedger)
	return s
}

// ServeHTTP serves both services and the admin API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// SetBalance sets the cash of account, creating it if needed. Its reservations stay held.
func (s *Sim) SetBalance(account string, cash float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.account(account).cash = cash
}

// Executions reports how many times the execution with id was performed: 0 or 1.
func (s *Sim) Executions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.executions[id]; ok {
		return e.performed
	}
	return 0
}

// ExecutionRequests reports how many requests for the execution with id arrived,
// including those a fault answered or that were invalid.
func (s *Sim) ExecutionRequests(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.executions[id]; ok {
		return e.requests
	}
	return 0
}

// Reserved reports whether the reservation with id currently holds funds.
func (s *Sim) Reserved(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.reservations[id]
	return ok && r.state == held
}

// Released reports whether the reservation with id was reserved and then released.
func (s *Sim) Released(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.reservations[id]
	return ok && r.state == released
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
	s.accounts = make(map[string]*account)
	s.reservations = make(map[string]*reservation)
	s.executions = make(map[string]*execution)
	s.stats = Stats{}
}

// account returns the account with id, creating it with the default cash. s.mu must be held.
func (s *Sim) account(id string) *account {
	a, ok := s.accounts[id]
	if !ok {
		a = &account{cash: s.cfg.DefaultCash}
		s.accounts[id] = a
	}
	return a
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
	f, fail := s.arrive(Portfolio, func() { s.stats.PortfolioRequests++ })
	if s.disrupt(w, r, f, fail) {
		return
	}

	s.mu.Lock()
	a := s.account(id)
	ans := answer{code: http.StatusOK, required: "available", body: map[string]any{
		"account_id": id,
		"cash":       a.cash,
		"reserved":   a.reserved,
		"available":  a.cash - a.reserved,
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
	bad := decodeRequest(r, &req, func() string { return req.ReservationID })
	if bad == nil {
		bad = req.validate()
	}
	f, fail := s.arrive(Portfolio, func() { s.stats.ReserveRequests++ })
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}
	s.reply(w, r, f, s.reserve(req.ReservationID, req.AccountID, *req.Amount))
}

func (s *Sim) reserve(id, accountID string, amount float64) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	res, ok := s.reservations[id]
	if !ok {
		res = &reservation{}
		s.reservations[id] = res
	}
	switch res.state {
	case held, released:
		return reservedAnswer(http.StatusOK, id, res)
	case refused:
		return errorAnswer(http.StatusConflict, "insufficient_funds", "")
	}

	a := s.account(accountID)
	if a.cash-a.reserved < amount {
		res.state = refused
		return errorAnswer(http.StatusConflict, "insufficient_funds", "")
	}
	a.reserved += amount
	*res = reservation{state: held, account: accountID, amount: amount}
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
	f, fail := s.arrive(Portfolio, func() { s.stats.ReleaseRequests++ })
	if s.disrupt(w, r, f, fail) {
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" && key != id {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", "Idempotency-Key differs from the reservation id"))
		return
	}
	s.reply(w, r, f, s.release(id))
}

func (s *Sim) release(id string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	status := "unknown"
	res, ok := s.reservations[id]
	switch {
	case ok && res.state == held:
		s.account(res.account).reserved -= res.amount
		res.state = released
		s.stats.Releases++
		status = "released"
	case ok && res.state == released:
		status = "released"
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
	bad := decodeRequest(r, &req, func() string { return req.ExecutionID })
	if bad == nil {
		bad = req.validate()
	}
	f, fail := s.arrive(Execution, func() {
		s.stats.ExecuteRequests++
		if req.ExecutionID != "" {
			s.execution(req.ExecutionID).requests++
		}
	})
	if s.disrupt(w, r, f, fail) {
		return
	}
	if bad != nil {
		s.reply(w, r, f, errorAnswer(http.StatusBadRequest, "bad_request", bad.Error()))
		return
	}
	s.reply(w, r, f, s.execute(&req, f.RefuseSymbols))
}

// execution returns the execution with id, creating it. s.mu must be held.
func (s *Sim) execution(id string) *execution {
	e, ok := s.executions[id]
	if !ok {
		e = &execution{}
		s.executions[id] = e
	}
	return e
}

func (s *Sim) execute(req *executeRequest, refuse []string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()

	e := s.execution(req.ExecutionID)
	if e.body != nil {
		code := e.code
		if code == http.StatusCreated {
			code = http.StatusOK
		}
		return answer{code: code, body: e.body, required: requiredOf(e.code)}
	}

	if slices.Contains(refuse, req.Symbol) {
		e.code = http.StatusUnprocessableEntity
		e.body = map[string]any{"error": "refused", "reason": fmt.Sprintf("symbol %s is not tradable", req.Symbol)}
		return answer{code: e.code, body: e.body, required: "error"}
	}

	price := s.cfg.MarketPrice
	if req.LimitPrice != nil {
		price = *req.LimitPrice
	}
	e.performed++
	s.stats.Executions++
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
