package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// WebhookStore is what the API needs of the webhook store. Every method is
// scoped to the tenant: another tenant's ids are not found.
type WebhookStore interface {
	// CreateEndpoint returns a *webhooks.ValidationError, errors wrapping
	// webhooks.ErrInvalidURL or webhooks.ErrURLNotAllowed,
	// webhooks.ErrTooManyEndpoints.
	// CreateEndpointBound also writes, with the endpoint, the binding
	// bind returns (webhooks.Binding), when bind is not nil.
	CreateEndpointBound(ctx context.Context, tenant string, in webhooks.EndpointInput, bind func(*webhooks.Endpoint, webhooks.Secret) webhooks.Binding) (*webhooks.Endpoint, webhooks.Secret, bool, error)
	// Endpoint, Endpoints, DeleteEndpoint, RotateSecret, DisableEndpoint
	// and Deliveries return webhooks.ErrEndpointNotFound.
	Endpoint(ctx context.Context, tenant, id string) (*webhooks.Endpoint, error)
	Endpoints(ctx context.Context, tenant string) ([]*webhooks.Endpoint, error)
	DeleteEndpoint(ctx context.Context, tenant, id string) error
	RotateSecret(ctx context.Context, tenant, id string) (*webhooks.Endpoint, webhooks.Secret, error)
	DisableEndpoint(ctx context.Context, tenant, id, reason string) (*webhooks.Endpoint, error)
	// UpdateEndpoint also returns what CreateEndpoint does for bad fields.
	UpdateEndpoint(ctx context.Context, tenant, id string, p webhooks.EndpointPatch) (*webhooks.Endpoint, error)
	Deliveries(ctx context.Context, tenant, endpointID string, p webhooks.DeliveryListParams) ([]*webhooks.Delivery, string, error)
	// Delivery returns webhooks.ErrDeliveryNotFound.
	Delivery(ctx context.Context, tenant, id string) (*webhooks.Delivery, error)
	// RotateCallbackSecret returns the tenant's new callback secret and
	// when the previous one stops signing (nil if there was none).
	RotateCallbackSecret(ctx context.Context, tenant string) (webhooks.Secret, *time.Time, error)
}

// WebhookQueue starts deliveries again, on the queues.
type WebhookQueue interface {
	// EnableEndpoint enables the endpoint and redelivers what was held
	// while it was disabled. webhooks.ErrEndpointNotFound.
	EnableEndpoint(ctx context.Context, tenant, id string) (*webhooks.Endpoint, error)
	// Redeliver runs the delivery again now, also from the dead-letter
	// queue. webhooks.ErrDeliveryNotFound, webhooks.ErrEndpointNotFound
	// (its endpoint was deleted), webhooks.ErrEndpointDisabled.
	Redeliver(ctx context.Context, tenant, id string) (*webhooks.Delivery, error)
	// StartRecovery starts redelivering the endpoint's failed deliveries
	// since a time. webhooks.ErrEndpointNotFound, webhooks.ErrEndpointDisabled.
	StartRecovery(ctx context.Context, tenant, endpointID string, since time.Time) (*webhooks.Recovery, error)
	// Recovery returns webhooks.ErrRecoveryNotFound.
	Recovery(ctx context.Context, tenant, id string) (*webhooks.Recovery, error)
}

// EndpointTester sends a test event to an endpoint now (webhooks.Deliverer).
type EndpointTester interface {
	// TestEndpoint returns webhooks.ErrEndpointNotFound.
	TestEndpoint(ctx context.Context, tenant, id string) (*webhooks.TestResult, error)
}

// webhookRoutes registers the webhook endpoints under /v1.
func (s *Server) webhookRoutes(v1 *gin.RouterGroup) {
	v1.POST("/webhook-endpoints", s.createEndpoint)
	v1.GET("/webhook-endpoints", s.listEndpoints)
	v1.GET("/webhook-endpoints/:id", s.getEndpoint)
	v1.PATCH("/webhook-endpoints/:id", s.updateEndpoint)
	v1.DELETE("/webhook-endpoints/:id", s.deleteEndpoint)
	v1.POST("/webhook-endpoints/:id/rotate-secret", s.rotateSecret)
	v1.POST("/webhook-endpoints/:id/disable", s.disableEndpoint)
	v1.POST("/webhook-endpoints/:id/enable", s.enableEndpoint)
	v1.GET("/webhook-endpoints/:id/deliveries", s.listDeliveries)
	v1.GET("/webhook-deliveries/:id", s.getDelivery)
	v1.POST("/webhook-deliveries/:id/retry", s.retryDelivery)
	v1.POST("/callback-secret/rotate", s.rotateCallbackSecret)
	v1.POST("/webhook-endpoints/:id/recover", s.recoverEndpoint)
	v1.GET("/webhook-recoveries/:id", s.getRecovery)
	if s.deps.EndpointTester != nil {
		v1.POST("/webhook-endpoints/:id/test", s.testEndpoint)
	}
	v1.GET("/event-types", s.listEventTypes)
}

// EndpointWithSecret is an endpoint with its secret, shown once: when the
// endpoint is created and when its secret is rotated.
type EndpointWithSecret struct {
	*webhooks.Endpoint
	Secret string `json:"secret"`
}

// EndpointList is a tenant's endpoints, oldest first.
type EndpointList struct {
	Data []*webhooks.Endpoint `json:"data"`
}

// DeliveryList is a page of an endpoint's deliveries, newest first.
type DeliveryList struct {
	Data       []*webhooks.Delivery `json:"data"`
	NextCursor string               `json:"next_cursor,omitempty"`
}

// CallbackSecret is the tenant's new callback secret, shown once.
type CallbackSecret struct {
	Secret                  string     `json:"secret"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
}

func (s *Server) endpointID(c *gin.Context) (string, bool) {
	return pathID(c, webhooks.ValidEndpointID, webhooks.ErrEndpointNotFound)
}

func (s *Server) createEndpoint(c *gin.Context) {
	var in webhooks.EndpointInput
	if err := decodeStrict(c, s.cfg.MaxBodyBytes, &in); err != nil {
		writeProblem(c, err)
		return
	}
	// With an Idempotency-Key, the answer is the key's record, written
	// with the endpoint (see idempotency.go).
	idem := s.idemRequestOf(c)
	var bind func(*webhooks.Endpoint, webhooks.Secret) webhooks.Binding
	if idem != nil {
		bind = func(ep *webhooks.Endpoint, secret webhooks.Secret) webhooks.Binding {
			body, _ := json.Marshal(EndpointWithSecret{ep, secret.String()}) // always encodes
			rec := idemRecord{Fingerprint: idem.fp, Status: http.StatusCreated, Body: body,
				Header: map[string]string{"Content-Type": "application/json", "Location": "/v1/webhook-endpoints/" + ep.ID}}
			return webhooks.Binding{Key: idem.key, Claim: idem.claimVal, Value: rec.encode(), TTL: s.cfg.IdempotencyTTL}
		}
	}
	ep, secret, bound, err := s.deps.Webhooks.CreateEndpointBound(c.Request.Context(), c.GetString(ctxTenant), in, bind)
	if err != nil {
		writeProblem(c, err)
		return
	}
	idem.setBound(bound)
	loc := "/v1/webhook-endpoints/" + ep.ID
	s.answerDurably(c, loc, func() {
		c.Header("Location", loc)
		writeJSON(c, http.StatusCreated, "application/json", EndpointWithSecret{ep, secret.String()})
	})
}

func (s *Server) listEndpoints(c *gin.Context) {
	list, err := s.deps.Webhooks.Endpoints(c.Request.Context(), c.GetString(ctxTenant))
	if err != nil {
		writeProblem(c, err)
		return
	}
	if list == nil {
		list = []*webhooks.Endpoint{}
	}
	writeJSON(c, http.StatusOK, "application/json", EndpointList{Data: list})
}

func (s *Server) getEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	ep, err := s.deps.Webhooks.Endpoint(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", ep)
}

func (s *Server) deleteEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	if err := s.deps.Webhooks.DeleteEndpoint(c.Request.Context(), c.GetString(ctxTenant), id); err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() {
		c.Status(http.StatusNoContent)
		c.Writer.WriteHeaderNow()
	})
}

func (s *Server) rotateSecret(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	ep, secret, err := s.deps.Webhooks.RotateSecret(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() { writeJSON(c, http.StatusOK, "application/json", EndpointWithSecret{ep, secret.String()}) })
}

func (s *Server) updateEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	var p webhooks.EndpointPatch
	if err := decodeStrict(c, s.cfg.MaxBodyBytes, &p); err != nil {
		writeProblem(c, err)
		return
	}
	ep, err := s.deps.Webhooks.UpdateEndpoint(c.Request.Context(), c.GetString(ctxTenant), id, p)
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() { writeJSON(c, http.StatusOK, "application/json", ep) })
}

func (s *Server) testEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	res, err := s.deps.EndpointTester.TestEndpoint(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", res)
}

// RecoverRequest is the body of POST /v1/webhook-endpoints/{id}/recover.
type RecoverRequest struct {
	Since *time.Time `json:"since"`
}

func (s *Server) recoverEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	var in RecoverRequest
	if err := decodeStrict(c, s.cfg.MaxBodyBytes, &in); err != nil {
		writeProblem(c, err)
		return
	}
	if in.Since == nil || in.Since.After(s.cfg.Now()) {
		p := newProblem("validation_failed", "since: must be a time in the past (RFC 3339)")
		p.Errors = []orders.FieldError{{Field: "since", Reason: "is required: an RFC 3339 time, not in the future"}}
		writeProblem(c, p)
		return
	}
	rec, err := s.deps.WebhookQueue.StartRecovery(c.Request.Context(), c.GetString(ctxTenant), id, *in.Since)
	if err != nil {
		writeProblem(c, err)
		return
	}
	loc := "/v1/webhook-recoveries/" + rec.ID
	s.answerDurably(c, loc, func() {
		c.Header("Location", loc)
		writeJSON(c, http.StatusAccepted, "application/json", rec)
	})
}

func (s *Server) getRecovery(c *gin.Context) {
	id, ok := pathID(c, webhooks.ValidRecoveryID, webhooks.ErrRecoveryNotFound)
	if !ok {
		return
	}
	rec, err := s.deps.WebhookQueue.Recovery(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", rec)
}

func (s *Server) disableEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	ep, err := s.deps.Webhooks.DisableEndpoint(c.Request.Context(), c.GetString(ctxTenant), id, webhooks.ReasonDisabledByUser)
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() { writeJSON(c, http.StatusOK, "application/json", ep) })
}

func (s *Server) enableEndpoint(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	ep, err := s.deps.WebhookQueue.EnableEndpoint(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() { writeJSON(c, http.StatusOK, "application/json", ep) })
}

func (s *Server) listDeliveries(c *gin.Context) {
	id, ok := s.endpointID(c)
	if !ok {
		return
	}
	var fe []orders.FieldError
	st := c.Query("status")
	if st != "" && !slices.Contains(webhooks.DeliveryStatuses, st) {
		fe = append(fe, orders.FieldError{Field: "status", Reason: "must be one of " + strings.Join(webhooks.DeliveryStatuses, ", ")})
	}
	p := webhooks.DeliveryListParams{Status: st, Limit: parseLimit(c, 20, 100, &fe), After: parseCursor(c, webhooks.ValidDeliveryID, &fe)}
	if pr := fieldProblem(fe); pr != nil {
		writeProblem(c, pr)
		return
	}
	list, next, err := s.deps.Webhooks.Deliveries(c.Request.Context(), c.GetString(ctxTenant), id, p)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", DeliveryList{Data: list, NextCursor: next})
}

func (s *Server) deliveryID(c *gin.Context) (string, bool) {
	return pathID(c, webhooks.ValidDeliveryID, webhooks.ErrDeliveryNotFound)
}

func (s *Server) getDelivery(c *gin.Context) {
	id, ok := s.deliveryID(c)
	if !ok {
		return
	}
	d, err := s.deps.Webhooks.Delivery(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", d)
}

func (s *Server) retryDelivery(c *gin.Context) {
	id, ok := s.deliveryID(c)
	if !ok {
		return
	}
	d, err := s.deps.WebhookQueue.Redeliver(c.Request.Context(), c.GetString(ctxTenant), id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	loc := "/v1/webhook-deliveries/" + d.ID
	s.answerDurably(c, loc, func() {
		c.Header("Location", loc)
		writeJSON(c, http.StatusAccepted, "application/json", d)
	})
}

func (s *Server) rotateCallbackSecret(c *gin.Context) {
	secret, prevUntil, err := s.deps.Webhooks.RotateCallbackSecret(c.Request.Context(), c.GetString(ctxTenant))
	if err != nil {
		writeProblem(c, err)
		return
	}
	s.answerDurably(c, "", func() {
		writeJSON(c, http.StatusOK, "application/json", CallbackSecret{Secret: secret.String(), PreviousSecretExpiresAt: prevUntil})
	})
}

// webhookProblem maps the webhook package's errors to problems; nil for
// other errors. toProblem calls it.
func webhookProblem(err error) *Problem {
	if ve, ok := errors.AsType[*webhooks.ValidationError](err); ok {
		p := newProblem("validation_failed", "the request has invalid fields")
		for _, f := range ve.Fields {
			p.Errors = append(p.Errors, orders.FieldError{Field: f.Field, Reason: f.Reason})
		}
		return p
	}
	switch {
	case errors.Is(err, webhooks.ErrURLNotAllowed):
		reason := strings.TrimPrefix(err.Error(), "webhooks: URL not allowed: ")
		p := problemf("url_not_allowed", "url: %s", reason)
		p.Errors = []orders.FieldError{{Field: "url", Reason: reason}}
		return p
	case errors.Is(err, webhooks.ErrInvalidURL):
		reason := strings.TrimPrefix(err.Error(), "webhooks: invalid URL: ")
		p := problemf("validation_failed", "url: %s", reason)
		p.Errors = []orders.FieldError{{Field: "url", Reason: reason}}
		return p
	case errors.Is(err, webhooks.ErrEndpointNotFound):
		return newProblem("not_found", strings.Replace(err.Error(), "webhook endpoint not found", "no such webhook endpoint", 1))
	case errors.Is(err, webhooks.ErrDeliveryNotFound):
		return newProblem("not_found", "no such webhook delivery")
	case errors.Is(err, webhooks.ErrRecoveryNotFound):
		return newProblem("not_found", "no such webhook recovery")
	case errors.Is(err, webhooks.ErrEndpointDisabled):
		return newProblem("endpoint_disabled", "the delivery's endpoint is disabled; enable it first, which redelivers what it missed")
	case errors.Is(err, webhooks.ErrTooManyEndpoints):
		return problemf("too_many_endpoints", "%v; delete one first", err)
	}
	return nil
}

// checkCallbackURL checks an order's callback_url as endpoint registration
// checks an endpoint's URL (Deps.CallbackURLs): a URL that does not parse
// strictly or that points where webhooks may not go is refused at
// placement, naming the field, rather than retried for days.
func (s *Server) checkCallbackURL(ctx context.Context, raw string) error {
	if raw == "" || s.deps.CallbackURLs == nil {
		return nil
	}
	err := s.deps.CallbackURLs.CheckURL(ctx, raw)
	if err == nil {
		return nil
	}
	if p := webhookProblem(err); p != nil && (errors.Is(err, webhooks.ErrURLNotAllowed) || errors.Is(err, webhooks.ErrInvalidURL)) {
		p.err = err
		p.Detail = strings.Replace(p.Detail, "url: ", "callback_url: ", 1)
		for i := range p.Errors {
			p.Errors[i].Field = "callback_url"
		}
		return p
	}
	return fmt.Errorf("check callback_url: %w", err)
}
