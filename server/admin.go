package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// The admin API (admin_api.go) and the dashboard's pages (admin_page.go)
// read the same data, through the functions of this file.

// AdminOrderStore is what the admin API needs of the order store beyond
// OrderStore: queries across tenants.
type AdminOrderStore interface {
	// Tenants lists every tenant that has placed an order.
	Tenants(ctx context.Context) ([]string, error)
	// ListAll lists the orders of every tenant, newest first.
	ListAll(ctx context.Context, p orders.ListParams) ([]*orders.Order, string, error)
	// Find returns the order id of whichever tenants have one.
	Find(ctx context.Context, id string) ([]*orders.Order, error)
	// CountCreatedSince counts the orders created since, by current status.
	CountCreatedSince(ctx context.Context, since time.Time) (map[orders.Status]int64, error)
}

// AdminWebhookStore is what the admin API needs of the webhook store beyond
// WebhookStore: queries across tenants.
type AdminWebhookStore interface {
	EndpointStates(ctx context.Context, tenants []string) ([]*webhooks.EndpointState, error)
	EventDeliveries(ctx context.Context, tenant, eventID string) ([]*webhooks.Delivery, error)
	DeliveriesOf(ctx context.Context, refs []webhooks.Ref) ([]*webhooks.Delivery, error)
}

// QueueInspector reads the task queues for the dashboard. The server knows
// nothing of the queues' implementation; internal/app implements it.
type QueueInspector interface {
	// QueueStats returns the size and latency of every queue, by name.
	QueueStats(ctx context.Context) ([]QueueStats, error)
	// FailedDeliveries returns the webhook deliveries in the dead-letter
	// queue, the newest failure first, of the tenant ("" for every tenant),
	// at most limit, starting at position offset of the queue's archive. It
	// also returns the position to go on from, 0 at the end. One call looks
	// at a bounded number of archived tasks, so a page may come back short.
	FailedDeliveries(ctx context.Context, tenant string, offset, limit int) ([]FailedDelivery, int, error)
}

// QueueStats are one task queue's figures.
type QueueStats struct {
	Queue     string `json:"queue"`
	Size      int    `json:"size"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	// LatencyMS is how long the oldest pending task has waited.
	LatencyMS      float64 `json:"latency_ms"`
	Paused         bool    `json:"paused"`
	ProcessedToday int     `json:"processed_today"`
	FailedToday    int     `json:"failed_today"`
}

// FailedDelivery is a delivery task in the dead-letter queue.
type FailedDelivery struct {
	Ref       webhooks.Ref
	FailedAt  time.Time
	LastError string
}

// Whoami is the answer of GET /admin/api/whoami: the admin key that asked.
type Whoami struct {
	KeyID  string `json:"key_id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name,omitempty"`
	Admin  bool   `json:"admin"`
}

// whoami shows which admin key called.
func (s *Server) whoami(c *gin.Context) {
	p := c.MustGet(ctxPrincipal).(*principal)
	writeJSON(c, http.StatusOK, "application/json", Whoami{KeyID: p.id, Tenant: p.tenant, Name: p.name, Admin: p.admin})
}

// AdminOrder is an order with its tenant.
type AdminOrder struct {
	Tenant string        `json:"tenant"`
	Order  *orders.Order `json:"order"`
}

// AdminOrderList is a page of orders of one or every tenant, newest first.
type AdminOrderList struct {
	Data       []AdminOrder `json:"data"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// AdminOrderDetail is an order, its timeline and its webhook deliveries.
type AdminOrderDetail struct {
	Tenant     string               `json:"tenant"`
	Order      *orders.Order        `json:"order"`
	Events     []orders.Event       `json:"events"`
	Deliveries []*webhooks.Delivery `json:"deliveries"`
}

// AdminEndpoint is a webhook endpoint with its tenant and health.
type AdminEndpoint struct {
	Tenant   string             `json:"tenant"`
	Endpoint *webhooks.Endpoint `json:"endpoint"`
	// Health is healthy, failing, open or disabled.
	Health        string     `json:"health"`
	FailureStreak int        `json:"failure_streak"`
	OpenUntil     *time.Time `json:"open_until,omitempty"`
}

// AdminEndpointList is the endpoints of one or every tenant.
type AdminEndpointList struct {
	Data []AdminEndpoint `json:"data"`
}

// AdminDelivery is a webhook delivery with its tenant; a failed one also
// says when it went to the dead-letter queue and why.
type AdminDelivery struct {
	Tenant    string             `json:"tenant"`
	Delivery  *webhooks.Delivery `json:"delivery"`
	FailedAt  *time.Time         `json:"failed_at,omitempty"`
	LastError string             `json:"last_error,omitempty"`
}

// AdminDeliveryList is a page of failed deliveries, the newest failure first.
type AdminDeliveryList struct {
	Data       []AdminDelivery `json:"data"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

// AdminBreakers is the breaker of each downstream.
type AdminBreakers struct {
	Breakers map[string]BreakerState `json:"breakers"`
}

// AdminStats are the dashboard's headline figures.
type AdminStats struct {
	At time.Time `json:"at"`
	// WindowSeconds is the window of OrdersByStatus: the last hour.
	WindowSeconds int `json:"window_seconds"`
	// OrdersByStatus counts the orders created in the window by their
	// current status.
	OrdersByStatus map[orders.Status]int64 `json:"orders_by_status"`
	Tenants        int                     `json:"tenants"`
	Queues         []QueueStats            `json:"queues"`
	Breakers       map[string]BreakerState `json:"breakers"`
}

// Limits of the admin queries.
const (
	adminDefaultLimit = 50
	adminMaxLimit     = 200
	statsWindow       = time.Hour
)

// orderQuery is a search of orders.
type orderQuery struct {
	Tenant, ID string
	Status     orders.Status
	Limit      int
	Cursor     string
}

func parseTenant(c *gin.Context, fe *[]orders.FieldError) string {
	t := c.Query("tenant")
	if t != "" && !tenantRe.MatchString(t) {
		*fe = append(*fe, orders.FieldError{Field: "tenant", Reason: "must be 1-64 of a-z, 0-9, '_' and '-'"})
	}
	return t
}

// parseTenantQuery reads the query of a list that takes only ?tenant=.
func parseTenantQuery(c *gin.Context) (string, *Problem) {
	var fe []orders.FieldError
	t := parseTenant(c, &fe)
	return t, fieldProblem(fe)
}

func parseOrderQuery(c *gin.Context) (orderQuery, *Problem) {
	var fe []orders.FieldError
	q := orderQuery{Tenant: parseTenant(c, &fe), ID: c.Query("id"), Status: parseOrderStatus(c, &fe)}
	if q.ID != "" && !validID(q.ID) {
		fe = append(fe, orders.FieldError{Field: "id", Reason: "must be an order id (a UUID)"})
	}
	q.Limit = parseLimit(c, adminDefaultLimit, adminMaxLimit, &fe)
	q.Cursor = parseCursor(c, validID, &fe)
	return q, fieldProblem(fe)
}

// searchOrders runs q: one order by id (of the tenant, or of any tenant),
// or a page of the tenant's or every tenant's orders.
func (s *Server) searchOrders(ctx context.Context, q orderQuery) (AdminOrderList, error) {
	out := AdminOrderList{Data: []AdminOrder{}}
	var list []*orders.Order
	var err error
	switch {
	case q.ID != "" && q.Tenant != "":
		var o *orders.Order
		o, err = s.deps.Orders.Get(ctx, q.Tenant, q.ID)
		if errors.Is(err, orders.ErrNotFound) {
			return out, nil
		}
		list = []*orders.Order{o}
	case q.ID != "":
		list, err = s.deps.AdminOrders.Find(ctx, q.ID)
	case q.Tenant != "":
		list, out.NextCursor, err = s.deps.Orders.List(ctx, q.Tenant, orders.ListParams{Status: q.Status, After: q.Cursor, Limit: q.Limit})
	default:
		list, out.NextCursor, err = s.deps.AdminOrders.ListAll(ctx, orders.ListParams{Status: q.Status, After: q.Cursor, Limit: q.Limit})
	}
	if err != nil {
		return out, err
	}
	for _, o := range list {
		if q.ID != "" && q.Status != "" && o.Status != q.Status {
			continue
		}
		out.Data = append(out.Data, AdminOrder{Tenant: o.Tenant, Order: o})
	}
	return out, nil
}

// validTenant reports whether t can be a tenant (for path parameters).
func validTenant(t string) bool { return tenantRe.MatchString(t) }

// orderDetail reads the order, its timeline, and the deliveries of the
// webhook event of its end (if it ended).
func (s *Server) orderDetail(ctx context.Context, tenant, id string) (*AdminOrderDetail, error) {
	if !validTenant(tenant) || !validID(id) {
		return nil, orders.ErrNotFound
	}
	o, err := s.deps.Orders.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	evs, err := s.deps.Orders.Events(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	d := &AdminOrderDetail{Tenant: tenant, Order: o, Events: evs, Deliveries: []*webhooks.Delivery{}}
	if s.deps.AdminWebhooks == nil {
		return d, nil
	}
	for _, e := range evs {
		if !e.Status.Terminal() || e.Type != orders.StatusEvent(e.Status) {
			continue
		}
		ds, err := s.deps.AdminWebhooks.EventDeliveries(ctx, tenant, webhooks.EventID(tenant, id, e.Seq))
		if err != nil {
			return nil, err
		}
		d.Deliveries = append(d.Deliveries, ds...)
	}
	return d, nil
}

// tenants is the tenant asked for, or every tenant, sorted.
func (s *Server) tenants(ctx context.Context, tenant string) ([]string, error) {
	if tenant != "" {
		return []string{tenant}, nil
	}
	ts, err := s.deps.AdminOrders.Tenants(ctx)
	slices.Sort(ts)
	return ts, err
}

func adminEndpoint(st *webhooks.EndpointState) AdminEndpoint {
	return AdminEndpoint{Tenant: st.Tenant, Endpoint: st.Endpoint, Health: st.Health, FailureStreak: st.FailureStreak, OpenUntil: st.OpenUntil}
}

// endpoints lists the endpoints of the tenant, or of every tenant.
func (s *Server) endpoints(ctx context.Context, tenant string) (AdminEndpointList, error) {
	out := AdminEndpointList{Data: []AdminEndpoint{}}
	ts, err := s.tenants(ctx, tenant)
	if err != nil {
		return out, err
	}
	states, err := s.deps.AdminWebhooks.EndpointStates(ctx, ts)
	if err != nil {
		return out, err
	}
	for _, st := range states {
		out.Data = append(out.Data, adminEndpoint(st))
	}
	return out, nil
}

// enableEndpoint enables the endpoint (redelivering what was held) and
// returns it with its health.
func (s *Server) adminEnableEndpoint(ctx context.Context, tenant, id string) (*AdminEndpoint, error) {
	if !validTenant(tenant) || !webhooks.ValidEndpointID(id) {
		return nil, webhooks.ErrEndpointNotFound
	}
	if _, err := s.deps.WebhookQueue.EnableEndpoint(ctx, tenant, id); err != nil {
		return nil, err
	}
	states, err := s.deps.AdminWebhooks.EndpointStates(ctx, []string{tenant})
	if err != nil {
		return nil, err
	}
	for _, st := range states {
		if st.Endpoint.ID == id {
			ep := adminEndpoint(st)
			return &ep, nil
		}
	}
	return nil, webhooks.ErrEndpointNotFound // deleted meanwhile
}

// deliveryQuery is a search of failed deliveries.
type deliveryQuery struct {
	Tenant string
	Limit  int
	Offset int
}

func parseDeliveryQuery(c *gin.Context) (deliveryQuery, *Problem) {
	var fe []orders.FieldError
	q := deliveryQuery{Tenant: parseTenant(c, &fe)}
	if st := c.Query("status"); st != "" && st != webhooks.DeliveryFailed {
		fe = append(fe, orders.FieldError{Field: "status", Reason: "must be failed"})
	}
	q.Limit = parseLimit(c, adminDefaultLimit, adminMaxLimit, &fe)
	if cur := c.Query("cursor"); cur != "" {
		n, err := strconv.Atoi(cur)
		if err != nil || n < 1 || strconv.Itoa(n) != cur {
			fe = append(fe, orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"})
		}
		q.Offset = n
	}
	return q, fieldProblem(fe)
}

// failedDeliveries lists the deliveries in the dead-letter queue.
func (s *Server) failedDeliveries(ctx context.Context, q deliveryQuery) (AdminDeliveryList, error) {
	out := AdminDeliveryList{Data: []AdminDelivery{}}
	failed, next, err := s.deps.Queues.FailedDeliveries(ctx, q.Tenant, q.Offset, q.Limit)
	if err != nil {
		return out, err
	}
	if next > 0 {
		out.NextCursor = strconv.Itoa(next)
	}
	refs := make([]webhooks.Ref, len(failed))
	for i, f := range failed {
		refs[i] = f.Ref
	}
	ds, err := s.deps.AdminWebhooks.DeliveriesOf(ctx, refs)
	if err != nil {
		return out, err
	}
	for i, d := range ds {
		if d == nil {
			continue // expired: nothing left to redeliver
		}
		f := failed[i]
		ad := AdminDelivery{Tenant: f.Ref.Tenant, Delivery: d, LastError: f.LastError}
		if !f.FailedAt.IsZero() {
			at := f.FailedAt.UTC()
			ad.FailedAt = &at
		}
		out.Data = append(out.Data, ad)
	}
	return out, nil
}

// adminDelivery reads one delivery of the tenant.
func (s *Server) adminDelivery(ctx context.Context, tenant, id string) (*AdminDelivery, error) {
	if !validTenant(tenant) || !webhooks.ValidDeliveryID(id) {
		return nil, webhooks.ErrDeliveryNotFound
	}
	d, err := s.deps.Webhooks.Delivery(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	return &AdminDelivery{Tenant: tenant, Delivery: d}, nil
}

// redeliver runs the tenant's delivery again, also from the dead-letter queue.
func (s *Server) redeliver(ctx context.Context, tenant, id string) (*AdminDelivery, error) {
	if !validTenant(tenant) || !webhooks.ValidDeliveryID(id) {
		return nil, webhooks.ErrDeliveryNotFound
	}
	d, err := s.deps.WebhookQueue.Redeliver(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	return &AdminDelivery{Tenant: tenant, Delivery: d}, nil
}

// breakers is each downstream's breaker (none without a reporter).
func (s *Server) breakers(ctx context.Context) map[string]BreakerState {
	if s.deps.Breakers == nil {
		return map[string]BreakerState{}
	}
	return s.deps.Breakers.Breakers(ctx)
}

// stats gathers the headline figures.
func (s *Server) stats(ctx context.Context) (*AdminStats, error) {
	now := s.cfg.Now().UTC()
	st := &AdminStats{At: now, WindowSeconds: int(statsWindow / time.Second), Queues: []QueueStats{}}
	var err error
	if st.OrdersByStatus, err = s.deps.AdminOrders.CountCreatedSince(ctx, now.Add(-statsWindow)); err != nil {
		return nil, err
	}
	ts, err := s.deps.AdminOrders.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	st.Tenants = len(ts)
	if s.deps.Queues != nil {
		if st.Queues, err = s.deps.Queues.QueueStats(ctx); err != nil {
			return nil, err
		}
	}
	st.Breakers = s.breakers(ctx)
	return st, nil
}

// hasWebhookAdmin reports whether the webhook parts of the admin API can run.
func (s *Server) hasWebhookAdmin() bool {
	return s.deps.Webhooks != nil && s.deps.WebhookQueue != nil && s.deps.AdminWebhooks != nil
}
