package server

import (
	"context"
	"crypto/sha256"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"

	"github.com/asyncgate/asyncgate/orders"
)

// What the operators' dashboard (package admin) uses of the API server: it
// is served on the same router, behind the same middleware (tracing,
// metrics, request log, recovery), authenticates the same keys through the
// same cache and answers errors with the same problems. Nothing else of
// the server is exported for it.

// Dashboard is the operators' side of the site, served on the API's
// router. New calls Routes once, before serving; api is the server being
// built, whose methods below the dashboard's handlers call at request time.
type Dashboard interface {
	Routes(r gin.IRouter, api *Server)
}

// Caller is who sent a request: the API key's id, its tenant and name, and
// whether it is an admin key.
type Caller struct {
	KeyID, Tenant, Name string
	Admin               bool
}

func (p *principal) caller() *Caller {
	if p == nil {
		return nil
	}
	return &Caller{KeyID: p.id, Tenant: p.tenant, Name: p.name, Admin: p.admin}
}

// Bearer authenticates the request's "Authorization: Bearer <key>" as the
// API's routes do and puts its caller on the request (see SetCaller). On a
// missing or invalid key it answers the 401 problem, hint saying how to
// authenticate, and returns nil.
func (s *Server) Bearer(c *gin.Context, hint string) *Caller {
	return s.bearer(c, hint).caller()
}

// KeyCaller returns the caller of the key whose SHA-256 is hash (through
// the key cache); nil for no such key.
func (s *Server) KeyCaller(ctx context.Context, hash [sha256.Size]byte) (*Caller, error) {
	p, err := s.principal(ctx, hash)
	return p.caller(), err
}

// SetCaller puts the caller on the request: RateLimit charges its key and
// the request log shows its tenant.
func SetCaller(c *gin.Context, p *Caller) {
	c.Set(ctxPrincipal, &principal{id: p.KeyID, tenant: p.Tenant, name: p.Name, admin: p.Admin})
	c.Set(ctxTenant, p.Tenant)
}

// CallerOf is the caller put on the request by Bearer or SetCaller; nil
// for none.
func CallerOf(c *gin.Context) *Caller {
	v, _ := c.Get(ctxPrincipal)
	p, _ := v.(*principal)
	return p.caller()
}

// RateLimit is the middleware that charges the request to its caller's
// key (after Bearer or SetCaller), as on the API's routes.
func (s *Server) RateLimit(c *gin.Context) { s.rateLimit(c) }

// Routes lists the routes s serves.
func (s *Server) Routes() gin.RoutesInfo { return s.h.Routes() }

// RequestID is the request's id (X-Request-Id).
func RequestID(c *gin.Context) string { return c.GetString(ctxRequestID) }

// Limit is l with its defaults as redis_rate's limit; an error says what
// is wrong with an invalid l.
func (l RateLimit) Limit() (redis_rate.Limit, error) {
	l = l.withDefaults()
	return l.gcra(), l.validate()
}

// WriteProblem sends err as application/problem+json: the one mapping of
// errors to problems (see AsProblem).
func WriteProblem(c *gin.Context, err error) { writeProblem(c, err) }

// WriteJSON sends v as JSON with the content type.
func WriteJSON(c *gin.Context, status int, contentType string, v any) {
	writeJSON(c, status, contentType, v)
}

// NewProblem is the problem of a stable code (it panics on an unknown one).
func NewProblem(code, detail string) *Problem { return newProblem(code, detail) }

// AsProblem maps err to the problem a client sees.
func AsProblem(err error) *Problem { return toProblem(err) }

// FieldProblem is a validation problem naming the query's wrong fields;
// nil for none.
func FieldProblem(fe []orders.FieldError) *Problem { return fieldProblem(fe) }

// ParseLimit reads ?limit=, def when absent, appending to fe when it is
// not from 1 to maxLimit.
func ParseLimit(c *gin.Context, def, maxLimit int, fe *[]orders.FieldError) int {
	return parseLimit(c, def, maxLimit, fe)
}

// ParseCursor reads ?cursor=, which must pass valid.
func ParseCursor(c *gin.Context, valid func(string) bool, fe *[]orders.FieldError) string {
	return parseCursor(c, valid, fe)
}

// ParseOrderStatus reads ?status= as an order status.
func ParseOrderStatus(c *gin.Context, fe *[]orders.FieldError) orders.Status {
	return parseOrderStatus(c, fe)
}

// ValidOrderID reports whether id can be an order id.
func ValidOrderID(id string) bool { return validID(id) }
