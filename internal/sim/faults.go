package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Service names one of the simulated services, each with its own [Faults].
type Service string

// The simulated services.
const (
	Portfolio Service = "portfolio" // GET /portfolios/…, POST /reservations…
	Execution Service = "execution" // POST /executions
)

// OutageMode says how a service is down.
type OutageMode string

// The outage modes.
const (
	OutageNone  OutageMode = ""      // the service is up
	Outage503   OutageMode = "503"   // every request gets 503 with Retry-After: 1
	OutageReset OutageMode = "reset" // every connection is closed (reset) without an answer
)

// GarbageMode says how a service spoils its answers.
type GarbageMode string

// The garbage modes.
const (
	GarbageNone             GarbageMode = ""                   // answers are fine
	GarbageInvalidJSON      GarbageMode = "invalid_json"       // the body is cut in half
	GarbageWrongContentType GarbageMode = "wrong_content_type" // Content-Type: text/html
	GarbageMissingField     GarbageMode = "missing_field"      // a field the client needs is left out
	GarbageHuge             GarbageMode = "huge"               // a 100 MiB body, streamed
)

// hugeBodySize is the size of the body of GarbageHuge.
const hugeBodySize = 100 << 20

// Faults are the failures a service simulates. The zero value is a healthy service.
//
// In JSON, durations are strings such as "250ms":
//
//	{"latency": "250ms", "error_rate": 0.1, "outage": "", "slow_drip": "0s",
//	 "refuse_symbols": ["XYZ"], "garbage": ""}
type Faults struct {
	// Latency is added before a request is handled. A request whose client gives up
	// meanwhile is not performed.
	Latency time.Duration

	// ErrorRate is the fraction of requests, from 0 to 1, answered 503 without performing them.
	ErrorRate float64

	// Outage takes the service down; see [OutageMode].
	Outage OutageMode

	// SlowDrip, when positive, writes answers one byte at a time, SlowDrip apart.
	SlowDrip time.Duration

	// RefuseSymbols are symbols the execution service refuses with 422. The portfolio
	// service ignores them.
	RefuseSymbols []string

	// Garbage spoils answers; see [GarbageMode].
	Garbage GarbageMode
}

func (f Faults) validate() error {
	switch {
	case f.Latency < 0:
		return errors.New("latency must not be negative")
	case f.SlowDrip < 0:
		return errors.New("slow_drip must not be negative")
	case !(f.ErrorRate >= 0 && f.ErrorRate <= 1):
		return errors.New("error_rate must be between 0 and 1")
	}
	switch f.Outage {
	case OutageNone, Outage503, OutageReset:
	default:
		return fmt.Errorf("unknown outage mode %q", f.Outage)
	}
	switch f.Garbage {
	case GarbageNone, GarbageInvalidJSON, GarbageWrongContentType, GarbageMissingField, GarbageHuge:
	default:
		return fmt.Errorf("unknown garbage mode %q", f.Garbage)
	}
	return nil
}

type faultsJSON struct {
	Latency       string      `json:"latency"`
	ErrorRate     float64     `json:"error_rate"`
	Outage        OutageMode  `json:"outage"`
	SlowDrip      string      `json:"slow_drip"`
	RefuseSymbols []string    `json:"refuse_symbols"`
	Garbage       GarbageMode `json:"garbage"`
}

// MarshalJSON writes f with its durations as strings.
func (f Faults) MarshalJSON() ([]byte, error) {
	symbols := f.RefuseSymbols
	if symbols == nil {
		symbols = []string{}
	}
	return json.Marshal(faultsJSON{
		Latency:       f.Latency.String(),
		ErrorRate:     f.ErrorRate,
		Outage:        f.Outage,
		SlowDrip:      f.SlowDrip.String(),
		RefuseSymbols: symbols,
		Garbage:       f.Garbage,
	})
}

// UnmarshalJSON reads f strictly: unknown fields and bad durations are errors, and absent
// fields are zero.
func (f *Faults) UnmarshalJSON(data []byte) error {
	var j faultsJSON
	if err := decodeStrict(data, &j); err != nil {
		return err
	}
	var out Faults
	var err error
	if out.Latency, err = parseDuration(j.Latency); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if out.SlowDrip, err = parseDuration(j.SlowDrip); err != nil {
		return fmt.Errorf("slow_drip: %w", err)
	}
	out.ErrorRate = j.ErrorRate
	out.Outage = j.Outage
	out.RefuseSymbols = j.RefuseSymbols
	out.Garbage = j.Garbage
	*f = out
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// SetFaults replaces the faults of svc. They apply to requests that arrive afterwards.
func (s *Sim) SetFaults(svc Service, f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.faults[svc]; !ok {
		return fmt.Errorf("unknown service %q", svc)
	}
	f.RefuseSymbols = slices.Clone(f.RefuseSymbols)
	s.faults[svc] = f
	s.cfg.Logger.Info("sim faults set", "service", string(svc), "faults", f)
	return nil
}

// Faults returns the faults of svc; none for an unknown service.
func (s *Sim) Faults(svc Service) Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults[svc]
	f.RefuseSymbols = slices.Clone(f.RefuseSymbols)
	return f
}

// ClearFaults makes both services healthy.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for svc := range s.faults {
		s.faults[svc] = Faults{}
	}
}

// arrive counts a request (count runs under the lock) and returns the faults of svc, and
// whether an outage or ErrorRate answers the request instead of the service.
func (s *Sim) arrive(svc Service, count func()) (f Faults, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	count()
	// The slice in the map is never changed in place, so sharing it read-only is safe.
	f = s.faults[svc]
	fail = f.Outage != OutageNone || (f.ErrorRate > 0 && s.cfg.Rand.Float64() < f.ErrorRate)
	if fail {
		s.stats.Faulted++
	}
	return f, fail
}

// disrupt applies the faults that come before the service: latency, then an outage or an
// injected error. It reports whether the request is done: answered by a fault, or dropped
// because its client went away.
func (s *Sim) disrupt(w http.ResponseWriter, r *http.Request, f Faults, fail bool) bool {
	if f.Latency > 0 && !sleep(r.Context(), f.Latency) {
		return true
	}
	if !fail {
		return false
	}
	switch f.Outage {
	case OutageReset:
		resetConnection(w)
	case Outage503:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "outage"})
	default:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "injected_failure"})
	}
	return true
}

// resetConnection closes the connection under w without an answer, with a TCP reset where
// it can. Where the connection cannot be hijacked (HTTP/2, a ResponseRecorder) it aborts
// the handler with http.ErrAbortHandler, which the server turns into a dropped connection.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// reply writes a, spoiled by the garbage and slow-drip faults of f.
func (s *Sim) reply(w http.ResponseWriter, r *http.Request, f Faults, a answer) {
	if f.Garbage == GarbageHuge {
		writeHuge(w, r, a.code)
		return
	}
	body := a.body
	if f.Garbage == GarbageMissingField {
		body = make(map[string]any, len(a.body))
		for k, v := range a.body {
			if k != a.required {
				body[k] = v
			}
		}
	}
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	contentType := "application/json"
	switch f.Garbage {
	case GarbageInvalidJSON:
		data = data[:len(data)/2]
	case GarbageWrongContentType:
		contentType = "text/html; charset=utf-8"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(a.code)
	if f.SlowDrip <= 0 {
		_, _ = w.Write(data)
		return
	}
	rc := http.NewResponseController(w)
	for i := range data {
		if i > 0 && !sleep(r.Context(), f.SlowDrip) {
			return
		}
		if _, err := w.Write(data[i : i+1]); err != nil {
			return
		}
		_ = rc.Flush()
	}
}

// writeHuge streams a JSON body of about hugeBodySize bytes from one small buffer, and stops
// as soon as the client goes away.
func writeHuge(w http.ResponseWriter, r *http.Request, code int) {
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if _, err := w.Write([]byte(`{"padding":"`)); err != nil {
		return
	}
	for left := hugeBodySize; left > 0; left -= len(chunk) {
		if r.Context().Err() != nil {
			return
		}
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			return
		}
	}
	_, _ = w.Write([]byte(`"}`))
}

// sleep waits for d, and reports false if ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// faultsBody is the body of GET and PUT /_sim/faults. A service left out of a PUT
// becomes healthy.
type faultsBody struct {
	Portfolio Faults `json:"portfolio"`
	Execution Faults `json:"execution"`
}

func (s *Sim) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, faultsBody{Portfolio: s.Faults(Portfolio), Execution: s.Faults(Execution)})
}

func (s *Sim) handlePutFaults(w http.ResponseWriter, r *http.Request) {
	var body faultsBody
	if err := readAdminBody(w, r, &body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "detail": err.Error()})
		return
	}
	for _, f := range []Faults{body.Portfolio, body.Execution} {
		if err := f.validate(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "detail": err.Error()})
			return
		}
	}
	// Both are valid, so neither call fails.
	_ = s.SetFaults(Portfolio, body.Portfolio)
	_ = s.SetFaults(Execution, body.Execution)
	s.handleGetFaults(w, r)
}

func (s *Sim) handleGetServiceFaults(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.service(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.Faults(svc))
}

func (s *Sim) handlePutServiceFaults(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.service(w, r)
	if !ok {
		return
	}
	var f Faults
	err := readAdminBody(w, r, &f)
	if err == nil {
		err = s.SetFaults(svc, f)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "detail": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.Faults(svc))
}

// service reads the {service} path value, answering 404 for an unknown one.
func (s *Sim) service(w http.ResponseWriter, r *http.Request) (Service, bool) {
	svc := Service(r.PathValue("service"))
	if svc != Portfolio && svc != Execution {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown_service"})
		return "", false
	}
	return svc, true
}

func readAdminBody(w http.ResponseWriter, r *http.Request, v any) error {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 64<<10)); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if err := decodeStrict(buf.Bytes(), v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	return nil
}

func (s *Sim) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}
