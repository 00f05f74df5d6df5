package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/asyncgate/asyncgate/orders"
)

// decodeStrict reads one JSON object into v: unknown fields, wrong types,
// trailing data and oversize bodies are client errors with a clear detail.
func decodeStrict(c *gin.Context, limit int64, v any) error {
	body, err := readBody(c, limit)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// readBody reads the body of a JSON request, at most limit bytes.
func readBody(c *gin.Context, limit int64) ([]byte, error) {
	if ct := c.GetHeader("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, problemf("unsupported_media_type", "send the body as application/json, not %q", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, problemf("malformed_request", "could not read the body: %v", err)
	}
	return body, nil
}

// DecodeJSON decodes exactly one JSON value into v, rejecting unknown fields.
// Its errors are problems that name the offending field.
func DecodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return newProblem("malformed_request", "the body is empty; send a JSON object")
	}
	if err := checkText(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return problemf("malformed_request", "malformed JSON at byte %d: %v", se.Offset, se)
		case errors.As(err, &te) && te.Field == "":
			return problemf("malformed_request", "the body must be a JSON object, not %s", te.Value)
		case errors.As(err, &te):
			p := problemf("validation_failed", "field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
			p.Errors = []orders.FieldError{{Field: te.Field, Reason: "must be " + jsonKind(te.Type.Kind().String())}}
			return p
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			p := problemf("validation_failed", "unknown field %q", f)
			p.Errors = []orders.FieldError{{Field: f, Reason: "is not a known field"}}
			return p
		case errors.Is(err, io.ErrUnexpectedEOF):
			return newProblem("malformed_request", "malformed JSON: unexpected end of input")
		default:
			return problemf("malformed_request", "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return newProblem("malformed_request", "unexpected data after the JSON object")
	}
	return nil
}

// checkText refuses a body that is not valid UTF-8, or whose strings hold
// a \u escape of half a surrogate pair: encoding/json would replace either
// with U+FFFD, silently changing what the client sent.
func checkText(body []byte) error {
	if !utf8.Valid(body) {
		i := 0
		for i < len(body) {
			r, n := utf8.DecodeRune(body[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return problemf("malformed_request", "the body is not valid UTF-8 (byte %d)", i)
	}
	inString, wantLow := false, false
	for i := 0; i < len(body); i++ {
		b := body[i]
		if !inString {
			inString = b == '"'
			continue
		}
		switch {
		case b == '"':
			inString = false
			if wantLow {
				return problemf("malformed_request", "a string holds half a UTF-16 surrogate pair (byte %d)", i)
			}
		case b == '\\' && i+1 < len(body):
			i++
			r := rune(-1)
			if body[i] == 'u' && i+4 < len(body) {
				if v, err := strconv.ParseUint(string(body[i+1:i+5]), 16, 16); err == nil {
					r = rune(v)
				}
				i += 4
			}
			low := r >= 0xdc00 && r <= 0xdfff
			if wantLow != low {
				return problemf("malformed_request", "a string holds half a UTF-16 surrogate pair (byte %d)", i)
			}
			wantLow = r >= 0xd800 && r <= 0xdbff
		case wantLow:
			return problemf("malformed_request", "a string holds half a UTF-16 surrogate pair (byte %d)", i)
		}
	}
	return nil
}

// DecodeOrder decodes and validates an order request: DecodeJSON, then the
// numbers as written (at most orders.MaxDecimals decimal places and
// orders.MaxSignificant significant digits: a literal with more is not
// exactly the value a float64 holds) and metadata values that are null
// (which would read as ""), then Request.Validate. Its errors are problems
// or an *orders.ValidationError naming every offending field.
func DecodeOrder(body []byte) (orders.Request, error) {
	var req orders.Request
	if err := DecodeJSON(body, &req); err != nil {
		return req, err
	}
	var raw struct {
		Quantity   json.Number        `json:"quantity"`
		LimitPrice json.Number        `json:"limit_price"`
		Metadata   map[string]*string `json:"metadata"`
	}
	// The body decoded strictly into req: this pass cannot fail.
	_ = json.Unmarshal(body, &raw)
	var ve orders.ValidationError
	if err := req.Validate(); err != nil {
		v, ok := errors.AsType[*orders.ValidationError](err)
		if !ok {
			return req, err
		}
		ve = *v
	}
	flagged := func(f string) bool {
		return slices.ContainsFunc(ve.Fields, func(e orders.FieldError) bool { return e.Field == f })
	}
	for _, n := range []struct {
		field string
		lit   json.Number
	}{{"quantity", raw.Quantity}, {"limit_price", raw.LimitPrice}} {
		if n.lit == "" || flagged(n.field) {
			continue
		}
		if reason := orders.DecimalReason(n.lit.String()); reason != "" {
			ve.Fields = append(ve.Fields, orders.FieldError{Field: n.field, Reason: reason})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(raw.Metadata)) {
		if raw.Metadata[k] == nil {
			ve.Fields = append(ve.Fields, orders.FieldError{Field: "metadata." + k, Reason: "must be a string, not null"})
		}
	}
	if len(ve.Fields) > 0 {
		return req, &ve
	}
	return req, nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "float64", "float32", "int", "int64":
		return "a number"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	case "ptr":
		return "a number"
	}
	return "of another type"
}

func (s *Server) placeOrder(c *gin.Context) {
	body, err := readBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		writeProblem(c, err)
		return
	}
	req, err := DecodeOrder(body)
	if err != nil {
		writeProblem(c, err)
		return
	}
	ctx := c.Request.Context()
	if err := s.checkCallbackURL(ctx, req.CallbackURL); err != nil {
		writeProblem(c, err)
		return
	}
	tenant := c.GetString(ctxTenant)
	now := s.cfg.Now().UTC()
	o := &orders.Order{
		ID: uuid.Must(uuid.NewV7()).String(), Tenant: tenant, Request: req,
		CreatedAt: now, Deadline: now.Add(s.cfg.OrderDeadline),
	}
	// With an Idempotency-Key, the key is bound to the order in the same
	// write as the order (see idempotency.go): a retry after a crash finds
	// the order rather than placing it again.
	idem := s.idemRequestOf(c)
	created, bound, enqueued, err := s.createAndEnqueue(ctx, o, idem.binding(o.ID))
	idem.setBound(bound)
	if errors.Is(err, orders.ErrDuplicateClientOrderID) && created != nil {
		// The order found may be another request's whose answer was a 503
		// not_durable: this answer waits for the barrier as that one did.
		loc := "/v1/orders/" + created.ID
		s.answerDurably(c, loc, func() {
			c.Header("Location", loc)
			writeProblem(c, err)
		})
		return
	}
	if err != nil {
		writeProblem(c, err)
		return
	}
	// The order is stored: from here on it cannot be lost. Should the
	// enqueue fail, the reconciler enqueues it later, so the client still
	// gets its 202.
	if enqueued != nil {
		s.log.WarnContext(ctx, "enqueue failed; the reconciler will enqueue the order", "order_id", o.ID, "tenant", tenant, "err", enqueued)
	}
	// The durability barrier: after the last write the 202 stands on (the
	// enqueue), before the answer.
	if s.answerDurably(c, "/v1/orders/"+created.ID, func() { s.accepted(c, created) }) {
		s.cfg.Metrics.OrderAccepted()
	}
}

// ridingStore and orderTasks are what the order store and the queue offer
// when the order's task can be written in the pipeline of the order's
// create (orders.Store and jobs.Enqueuer on one Redis, decision 88).
type ridingStore interface {
	CreateRiding(ctx context.Context, o *orders.Order, b orders.Binding, r orders.Rider) (*orders.Order, bool, error, error)
}

type orderTasks interface {
	OrderTask(ctx context.Context, tenant, id string) orders.Rider
}

// createAndEnqueue stores the order and enqueues its process task: in one
// round trip when the store and the queue allow it, else the create and
// then the enqueue. enqueueErr is the enqueue's error, meaningful when the
// order was stored (err nil).
func (s *Server) createAndEnqueue(ctx context.Context, o *orders.Order, b orders.Binding) (created *orders.Order, bound bool, enqueueErr, err error) {
	if rs, ok := s.deps.Orders.(ridingStore); ok {
		if q, ok := s.deps.Queue.(orderTasks); ok {
			if task := q.OrderTask(ctx, o.Tenant, o.ID); task != nil {
				created, bound, enqueueErr, err = rs.CreateRiding(ctx, o, b, task)
				if err != nil && enqueueErr != nil {
					// A duplicate's task not withdrawn, or a create whose
					// outcome is unknown: a task without its order is
					// dropped by the worker.
					s.log.WarnContext(ctx, "the order's task may be left without its order", "order_id", o.ID, "tenant", o.Tenant, "err", enqueueErr)
				}
				return created, bound, enqueueErr, err
			}
		}
	}
	created, bound, err = s.deps.Orders.CreateBound(ctx, o, b)
	if err != nil {
		return created, bound, nil, err
	}
	return created, bound, s.deps.Queue.EnqueueOrder(ctx, o.Tenant, o.ID, nil), nil
}

func (s *Server) accepted(c *gin.Context, o *orders.Order) {
	c.Header("Location", "/v1/orders/"+o.ID)
	c.Header("Retry-After", s.retryAfter())
	writeJSON(c, http.StatusAccepted, "application/json", o)
}

// retryAfter is the Retry-After of a 202 and of a pending order: when to
// look at the order again.
func (s *Server) retryAfter() string {
	return strconv.Itoa(int(max(1, s.cfg.RetryAfter.Seconds())))
}

func validID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

func (s *Server) orderID(c *gin.Context) (string, bool) {
	return pathID(c, validID, newProblem("not_found", "no such order"))
}

// pathID returns the route's :id when valid accepts it; otherwise it sends
// notFound (an id that cannot exist is as absent as one that does not).
func pathID(c *gin.Context, valid func(string) bool, notFound error) (string, bool) {
	id := c.Param("id")
	if !valid(id) {
		writeProblem(c, notFound)
		return "", false
	}
	return id, true
}

func (s *Server) getOrder(c *gin.Context) {
	id, ok := s.orderID(c)
	if !ok {
		return
	}
	tenant := c.GetString(ctxTenant)
	ctx := c.Request.Context()
	var wait time.Duration
	if w := c.Query("wait"); w != "" {
		d, err := parseWait(w)
		if err != nil {
			p := problemf("validation_failed", "wait: %v", err)
			p.Errors = []orders.FieldError{{Field: "wait", Reason: "must be a duration like 30s (at most " + s.cfg.MaxWait.String() + ")"}}
			writeProblem(c, p)
			return
		}
		wait = min(d, s.cfg.MaxWait)
	}
	var o *orders.Order
	var err error
	if wait > 0 {
		outlast(c, wait)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		o, err = s.deps.Orders.WaitForChange(wctx, tenant, id, "")
	} else {
		o, err = s.deps.Orders.Get(ctx, tenant, id)
	}
	if err != nil {
		writeProblem(c, err)
		return
	}
	if !o.Status.Terminal() {
		c.Header("Retry-After", s.retryAfter())
	}
	writeJSON(c, http.StatusOK, "application/json", o)
}

// parseWait accepts a Go duration ("30s", "1m") or whole seconds ("30").
func parseWait(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, errors.New("must not be negative")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration", v)
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// OrderList is a page of orders.
type OrderList struct {
	Data       []*orders.Order `json:"data"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

func (s *Server) listOrders(c *gin.Context) {
	var fe []orders.FieldError
	p := orders.ListParams{Status: parseOrderStatus(c, &fe), Limit: parseLimit(c, 50, 200, &fe), After: parseCursor(c, validID, &fe)}
	if pr := fieldProblem(fe); pr != nil {
		writeProblem(c, pr)
		return
	}
	list, next, err := s.deps.Orders.List(c.Request.Context(), c.GetString(ctxTenant), p)
	if err != nil {
		writeProblem(c, err)
		return
	}
	if list == nil {
		list = []*orders.Order{}
	}
	writeJSON(c, http.StatusOK, "application/json", OrderList{Data: list, NextCursor: next})
}

// EventList is an order's timeline.
type EventList struct {
	Data []orders.Event `json:"data"`
}

func (s *Server) orderEvents(c *gin.Context) {
	id, ok := s.orderID(c)
	if !ok {
		return
	}
	evs, err := s.deps.Orders.Events(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", EventList{Data: evs})
}

func (s *Server) cancelOrder(c *gin.Context) {
	id, ok := s.orderID(c)
	if !ok {
		return
	}
	tenant := c.GetString(ctxTenant)
	ctx := c.Request.Context()
	if err := s.deps.Orders.RequestCancel(ctx, tenant, id); err != nil {
		writeProblem(c, err)
		return
	}
	// The cancel is recorded; the compensation task carries it out. Should
	// the enqueue fail, the order's own task or the reconciler will.
	if err := s.deps.Queue.EnqueueCompensation(ctx, tenant, id, nil); err != nil {
		s.log.WarnContext(ctx, "enqueue compensation failed; the reconciler will", "order_id", id, "tenant", tenant, "err", err)
	}
	o, err := s.deps.Orders.Get(ctx, tenant, id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "/v1/orders/"+id, func() { s.accepted(c, o) })
}
