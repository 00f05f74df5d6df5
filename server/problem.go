package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/orders"
)

// ProblemBase prefixes every problem type URI; the code follows it.
const ProblemBase = "https://asyncgate.dev/problems/"

// Problem is an RFC 9457 problem detail. Code is stable; Detail is for humans.
type Problem struct {
	Type      string              `json:"type"`
	Title     string              `json:"title"`
	Status    int                 `json:"status"`
	Detail    string              `json:"detail,omitempty"`
	Code      string              `json:"code"`
	Instance  string              `json:"instance,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
	Errors    []orders.FieldError `json:"errors,omitempty"`

	err        error         // the cause, logged, never shown
	retryAfter time.Duration // the Retry-After of a 503; zero for the default
}

func (p *Problem) Error() string {
	if p.err != nil {
		return p.Code + ": " + p.Detail + ": " + p.err.Error()
	}
	return p.Code + ": " + p.Detail
}

func (p *Problem) Unwrap() error { return p.err }

// problemKinds is the table of stable codes: status and title.
var problemKinds = map[string]struct {
	status int
	title  string
}{
	"malformed_request":         {http.StatusBadRequest, "Malformed request"},
	"validation_failed":         {http.StatusUnprocessableEntity, "Validation failed"},
	"body_too_large":            {http.StatusRequestEntityTooLarge, "Request body too large"},
	"unsupported_media_type":    {http.StatusUnsupportedMediaType, "Unsupported media type"},
	"unauthorized":              {http.StatusUnauthorized, "Unauthorized"},
	"forbidden":                 {http.StatusForbidden, "Forbidden"},
	"csrf_failed":               {http.StatusForbidden, "CSRF check failed"},
	"not_found":                 {http.StatusNotFound, "Not found"},
	"method_not_allowed":        {http.StatusMethodNotAllowed, "Method not allowed"},
	"too_late":                  {http.StatusConflict, "Too late"},
	"duplicate_client_order_id": {http.StatusConflict, "Duplicate client order id"},
	"idempotency_key_in_use":    {http.StatusConflict, "Idempotency key in use"},
	"idempotency_key_reused":    {http.StatusUnprocessableEntity, "Idempotency key reused"},
	"rate_limited":              {http.StatusTooManyRequests, "Too many requests"},
	"unavailable":               {http.StatusServiceUnavailable, "Service unavailable"},
	"portfolio_unavailable":     {http.StatusServiceUnavailable, "Portfolio unavailable"},
	"not_durable":               {http.StatusServiceUnavailable, "Not confirmed durable"},
	"internal":                  {http.StatusInternalServerError, "Internal error"},
	"url_not_allowed":           {http.StatusUnprocessableEntity, "URL not allowed"},
	"endpoint_disabled":         {http.StatusConflict, "Endpoint disabled"},
	"too_many_endpoints":        {http.StatusConflict, "Too many endpoints"},
}

// ProblemCodes lists every stable problem code.
func ProblemCodes() []string {
	out := make([]string, 0, len(problemKinds))
	for c := range problemKinds {
		out = append(out, c)
	}
	return out
}

func newProblem(code, detail string) *Problem {
	k, ok := problemKinds[code]
	if !ok {
		panic("server: unknown problem code " + code)
	}
	return &Problem{Type: ProblemBase + code, Title: k.title, Status: k.status, Detail: detail, Code: code}
}

func problemf(code, format string, args ...any) *Problem {
	return newProblem(code, fmt.Sprintf(format, args...))
}

// toProblem maps any error to the problem the client sees: the one place
// where domain errors become HTTP.
func toProblem(err error) *Problem {
	var p *Problem
	var ve *orders.ValidationError
	var mbe *http.MaxBytesError
	var ue *UnavailableError
	switch {
	case errors.As(err, &p):
		return p
	case webhookProblem(err) != nil:
		p = webhookProblem(err)
	case errors.As(err, &ve):
		p = newProblem("validation_failed", "the request has invalid fields")
		p.Errors = ve.Fields
	case errors.As(err, &mbe):
		p = problemf("body_too_large", "the body exceeds %d bytes", mbe.Limit)
	case errors.Is(err, orders.ErrNotFound):
		p = newProblem("not_found", "no such order")
	case errors.Is(err, ErrAccountNotFound):
		p = newProblem("not_found", "no such account for your tenant")
	case errors.Is(err, orders.ErrTooLate):
		p = newProblem("too_late", "the order is already executing and can no longer be cancelled")
	case errors.Is(err, orders.ErrTerminal):
		p = newProblem("too_late", "the order has already ended")
	case errors.Is(err, orders.ErrDuplicateClientOrderID):
		p = newProblem("duplicate_client_order_id", "an order with this client_order_id exists")
	case errors.As(err, &ue):
		code := ue.Service + "_unavailable" // such as portfolio_unavailable
		if _, ok := problemKinds[code]; !ok {
			code = "unavailable"
		}
		p = problemf(code, "the %s service is unavailable and no earlier answer is known; retry later", ue.Service)
		p.retryAfter = ue.RetryAfter
	case isUnavailable(err):
		p = newProblem("unavailable", "the service is temporarily unavailable; retry later")
	default:
		p = newProblem("internal", "an internal error occurred")
	}
	p.err = err
	return p
}

// isUnavailable reports whether err means a dependency (Redis) is away for
// a while rather than a bug: the client should retry.
func isUnavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err)
}

// writeProblem sends err as application/problem+json.
func writeProblem(c *gin.Context, err error) {
	p := toProblem(err)
	// A URI reference (RFC 9457): the path as the client sent it when
	// that is well-formed, else percent-encoded (a space, '<', '"').
	p.Instance = c.Request.URL.EscapedPath()
	p.RequestID = c.GetString(ctxRequestID)
	if p.Status == http.StatusUnauthorized {
		dropBody(c) // nobody we know: their body is not worth a read
	}
	if p.Status >= 500 {
		c.Header("Retry-After", strconv.Itoa(int(max(1, (p.retryAfter+time.Second-1)/time.Second))))
	}
	c.Error(p) // the request log shows the cause
	writeJSON(c, p.Status, "application/problem+json", p)
	c.Abort()
}

func writeJSON(c *gin.Context, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"type":"` + ProblemBase + `internal","title":"Internal error","status":500,"code":"internal"}`)
		status, contentType = 500, "application/problem+json"
	}
	c.Data(status, contentType, b)
}
