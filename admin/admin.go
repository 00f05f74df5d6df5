// Package admin is asyncgate's operators' dashboard at /admin: the login
// page and its sessions, the HTML pages (overview, orders, webhook
// endpoints, failed deliveries), the admin JSON API under /admin/api, and
// the queue dashboard (asynqmon) mounted at /admin/queues.
//
// It is served by the API's router (see server.Dashboard) behind the API's
// middleware, and shares with the public API only what both need: key
// authentication and rate limits (server.Server's Bearer, KeyCaller,
// RateLimit), problem responses (server.WriteProblem and its table of
// codes) and the stores, which it reads through the interfaces below.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// The admin API (api.go) and the dashboard's pages (page.go) read the
// same data, through the functions of this file.

// OrderStore is what the dashboard needs of the order store: an order and
// its timeline, and queries across tenants.
type OrderStore interface {
	Get(ctx context.Context, tenant, id string) (*orders.Order, error)
	Events(ctx context.Context, tenant, id string) ([]orders.Event, error)
	List(ctx context.Context, tenant string, p orders.ListParams) ([]*orders.Order, string, error)
	// Tenants lists every tenant that has placed an order.
	Tenants(ctx context.Context) ([]string, error)
	// ListAll lists the orders of every tenant, newest first.
	ListAll(ctx context.Context, p orders.ListParams) ([]*orders.Order, string, error)
	// Find returns the order id of whichever tenants have one.
	Find(ctx context.Context, id string) ([]*orders.Order, error)
	// CountCreatedSince counts the orders created since, by current status.
	CountCreatedSince(ctx context.Context, since time.Time) (map[orders.Status]int64, error)
}

// WebhookStore is what the dashboard needs of the webhook store: queries
// across tenants.
type WebhookStore interface {
	// Delivery returns webhooks.ErrDeliveryNotFound.
	Delivery(ctx context.Context, tenant, id string) (*webhooks.Delivery, error)
	EndpointStates(ctx context.Context, tenants []string) ([]*webhooks.EndpointState, error)
	EventDeliveries(ctx context.Context, tenant, eventID string) ([]*webhooks.Delivery, error)
	DeliveriesOf(ctx context.Context, refs []webhooks.Ref) ([]*webhooks.Delivery, error)
}

// WebhookQueue enables endpoints and redelivers.
type WebhookQueue interface {
	// EnableEndpoint enables the endpoint and redelivers what was held
	// while it was disabled. webhooks.ErrEndpointNotFound.
	EnableEndpoint(ctx context.Context, tenant, id string) (*webhooks.Endpoint, error)
	// Redeliver runs the delivery again now, also from the dead-letter
	// queue. webhooks.ErrDeliveryNotFound, webhooks.ErrEndpointNotFound,
	// webhooks.ErrEndpointDisabled.
	Redeliver(ctx context.Context, tenant, id string) (*webhooks.Delivery, error)
}

// BreakerReporter reports the downstream breakers.
type BreakerReporter interface {
	Breakers(ctx context.Context) map[string]server.BreakerState
}

// Config configures the dashboard.
type Config struct {
	// SessionSecret signs the session cookies and derives their CSRF
	// tokens; 32 bytes or more. Empty: a random secret kept in Redis
	// (ag:admin:session-secret, created once with SET NX) and shared by
	// every API process; without Deps.Redis, one per process.
	SessionSecret []byte
	// SessionTTL is how long a login lasts. Defaults to 8h.
	SessionTTL time.Duration
	// InsecureCookies drops the Secure attribute of the cookies, for
	// plain-http development (asyncgate dev).
	InsecureCookies bool
	// LoginRateLimit caps the login attempts of each client address (with
	// Deps.Redis). Defaults to 10 a minute.
	LoginRateLimit server.RateLimit
	// MaxBodyBytes caps the bodies of forms. Defaults to 64 KiB.
	MaxBodyBytes int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.SessionTTL == 0 {
		c.SessionTTL = 8 * time.Hour
	}
	if c.LoginRateLimit.Rate == 0 {
		c.LoginRateLimit = server.RateLimit{Rate: 10, Period: time.Minute}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Deps are the collaborators of the dashboard. Orders is required; nil
// Webhooks (or WebhookQueue) leaves the webhook pages out, nil Queues the
// failed deliveries and the queue figures, nil QueuesUI the queue
// dashboard, nil Breakers the breakers.
type Deps struct {
	Orders       OrderStore
	Webhooks     WebhookStore
	WebhookQueue WebhookQueue
	Queues       QueueInspector
	Breakers     BreakerReporter
	// QueuesUI is the queue dashboard (asynqmon, built by the caller: this
	// package knows nothing of Asynq), mounted at QueuesRoot behind the
	// dashboard's authentication.
	QueuesUI http.Handler
	// Redis keeps the session secret and counts login attempts; nil: a
	// secret per process and no login limit.
	Redis redis.UniversalClient
}

// Dashboard is the operators' dashboard; it implements server.Dashboard.
type Dashboard struct {
	cfg        Config
	deps       Deps
	log        *slog.Logger
	loginLimit redis_rate.Limit
	adminAuth  *adminAuth
	api        *server.Server
}

// New returns the dashboard, to hand the API server as Deps.Dashboard.
func New(cfg Config, deps Deps) (*Dashboard, error) {
	cfg = cfg.withDefaults()
	if n := len(cfg.SessionSecret); n > 0 && n < minSecret {
		return nil, fmt.Errorf("admin: the session secret must be at least %d bytes, not %d", minSecret, n)
	}
	if cfg.SessionTTL < time.Minute {
		return nil, errors.New("admin: the session TTL must be a minute or more")
	}
	limit, err := cfg.LoginRateLimit.Limit()
	if err != nil {
		return nil, fmt.Errorf("admin: login %w", err)
	}
	if deps.Orders == nil {
		return nil, errors.New("admin: no order store")
	}
	return &Dashboard{cfg: cfg, deps: deps, log: cfg.Logger, loginLimit: limit, adminAuth: newAdminAuth(cfg)}, nil
}

// Routes registers the dashboard on the API's router (server.Dashboard).
// Under /admin: a Bearer admin key, or the login page's session cookie
// (with CSRF tokens); see auth.go.
func (a *Dashboard) Routes(r gin.IRouter, api *server.Server) {
	a.api = api
	r.GET(loginPath, a.loginForm)
	r.POST(loginPath, a.login)
	g := r.Group("/admin", a.requireAdminAuth, api.RateLimit)
	g.POST("/logout", a.logout)
	a.adminAPIRoutes(g.Group("/api"))
	a.adminPageRoutes(g)
	a.adminQueueRoutes(g)
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
	// RetryingDeliveries is like FailedDeliveries for the webhook
	// deliveries whose last attempt failed and which wait for the next
	// one, the soonest first.
	RetryingDeliveries(ctx context.Context, tenant string, offset, limit int) ([]FailedDelivery, int, error)
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

// FailedDelivery is a delivery task in the dead-letter queue, or one
// waiting to retry.
type FailedDelivery struct {
	Ref webhooks.Ref
	// FailedAt is when it went to the dead-letter queue (failed ones).
	FailedAt time.Time
	// NextAttemptAt is when it runs next (retrying ones).
	NextAttemptAt time.Time
	LastError     string
}

// Whoami is the answer of GET /admin/api/whoami: the admin key that asked.
type Whoami struct {
	KeyID  string `json:"key_id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name,omitempty"`
	Admin  bool   `json:"admin"`
}

// whoami shows which admin key called.
func (a *Dashboard) whoami(c *gin.Context) {
	p := server.CallerOf(c)
	server.WriteJSON(c, http.StatusOK, "application/json", Whoami{KeyID: p.KeyID, Tenant: p.Tenant, Name: p.Name, Admin: p.Admin})
}

// Order is an order with its tenant.
type Order struct {
	Tenant string        `json:"tenant"`
	Order  *orders.Order `json:"order"`
}

// OrderList is a page of orders of one or every tenant, newest first.
type OrderList struct {
	Data       []Order `json:"data"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// OrderDetail is an order, its timeline and its webhook deliveries.
type OrderDetail struct {
	Tenant     string               `json:"tenant"`
	Order      *orders.Order        `json:"order"`
	Events     []orders.Event       `json:"events"`
	Deliveries []*webhooks.Delivery `json:"deliveries"`
}

// Endpoint is a webhook endpoint with its tenant and health.
type Endpoint struct {
	Tenant   string             `json:"tenant"`
	Endpoint *webhooks.Endpoint `json:"endpoint"`
	// Health is healthy, failing, open or disabled.
	Health        string     `json:"health"`
	FailureStreak int        `json:"failure_streak"`
	OpenUntil     *time.Time `json:"open_until,omitempty"`
}

// EndpointList is the endpoints of one or every tenant.
type EndpointList struct {
	Data []Endpoint `json:"data"`
}

// Delivery is a webhook delivery with its tenant; a failed one also
// says when it went to the dead-letter queue and why, a retrying one when
// it is attempted next and why the last attempt failed.
type Delivery struct {
	Tenant        string             `json:"tenant"`
	Delivery      *webhooks.Delivery `json:"delivery"`
	FailedAt      *time.Time         `json:"failed_at,omitempty"`
	NextAttemptAt *time.Time         `json:"next_attempt_at,omitempty"`
	LastError     string             `json:"last_error,omitempty"`
}

// DeliveryList is a page of failed deliveries, the newest failure first,
// or of retrying ones, the soonest next attempt first.
type DeliveryList struct {
	Data       []Delivery `json:"data"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// Breakers is the breaker of each downstream.
type Breakers struct {
	Breakers map[string]server.BreakerState `json:"breakers"`
}

// Stats are the dashboard's headline figures.
type Stats struct {
	At time.Time `json:"at"`
	// WindowSeconds is the window of OrdersByStatus: the last hour.
	WindowSeconds int `json:"window_seconds"`
	// OrdersByStatus counts the orders created in the window by their
	// current status.
	OrdersByStatus map[orders.Status]int64        `json:"orders_by_status"`
	Tenants        int                            `json:"tenants"`
	Queues         []QueueStats                   `json:"queues"`
	Breakers       map[string]server.BreakerState `json:"breakers"`
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
	if t != "" && !apikeys.TenantPattern.MatchString(t) {
		*fe = append(*fe, orders.FieldError{Field: "tenant", Reason: "must be 1-64 of a-z, 0-9, '_' and '-'"})
	}
	return t
}

// parseTenantQuery reads the query of a list that takes only ?tenant=.
func parseTenantQuery(c *gin.Context) (string, *server.Problem) {
	var fe []orders.FieldError
	t := parseTenant(c, &fe)
	return t, server.FieldProblem(fe)
}

func parseOrderQuery(c *gin.Context) (orderQuery, *server.Problem) {
	var fe []orders.FieldError
	q := orderQuery{Tenant: parseTenant(c, &fe), ID: c.Query("id"), Status: server.ParseOrderStatus(c, &fe)}
	if q.ID != "" && !server.ValidOrderID(q.ID) {
		fe = append(fe, orders.FieldError{Field: "id", Reason: "must be an order id (a UUID)"})
	}
	q.Limit = server.ParseLimit(c, adminDefaultLimit, adminMaxLimit, &fe)
	q.Cursor = server.ParseCursor(c, server.ValidOrderID, &fe)
	return q, server.FieldProblem(fe)
}

// searchOrders runs q: one order by id (of the tenant, or of any tenant),
// or a page of the tenant's or every tenant's orders.
func (a *Dashboard) searchOrders(ctx context.Context, q orderQuery) (OrderList, error) {
	out := OrderList{Data: []Order{}}
	var list []*orders.Order
	var err error
	switch {
	case q.ID != "" && q.Tenant != "":
		var o *orders.Order
		o, err = a.deps.Orders.Get(ctx, q.Tenant, q.ID)
		if errors.Is(err, orders.ErrNotFound) {
			return out, nil
		}
		list = []*orders.Order{o}
	case q.ID != "":
		list, err = a.deps.Orders.Find(ctx, q.ID)
	case q.Tenant != "":
		list, out.NextCursor, err = a.deps.Orders.List(ctx, q.Tenant, orders.ListParams{Status: q.Status, After: q.Cursor, Limit: q.Limit})
	default:
		list, out.NextCursor, err = a.deps.Orders.ListAll(ctx, orders.ListParams{Status: q.Status, After: q.Cursor, Limit: q.Limit})
	}
	if err != nil {
		return out, err
	}
	for _, o := range list {
		if q.ID != "" && q.Status != "" && o.Status != q.Status {
			continue
		}
		out.Data = append(out.Data, Order{Tenant: o.Tenant, Order: o})
	}
	return out, nil
}

// validTenant reports whether t can be a tenant (for path parameters).
func validTenant(t string) bool { return apikeys.TenantPattern.MatchString(t) }

// orderDetail reads the order, its timeline, and the deliveries of the
// webhook event of its end (if it ended).
func (a *Dashboard) orderDetail(ctx context.Context, tenant, id string) (*OrderDetail, error) {
	if !validTenant(tenant) || !server.ValidOrderID(id) {
		return nil, orders.ErrNotFound
	}
	o, err := a.deps.Orders.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	evs, err := a.deps.Orders.Events(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	d := &OrderDetail{Tenant: tenant, Order: o, Events: evs, Deliveries: []*webhooks.Delivery{}}
	if a.deps.Webhooks == nil {
		return d, nil
	}
	for _, e := range evs {
		if !e.Status.Terminal() || e.Type != orders.StatusEvent(e.Status) {
			continue
		}
		ds, err := a.deps.Webhooks.EventDeliveries(ctx, tenant, webhooks.EventID(tenant, id, e.Seq))
		if err != nil {
			return nil, err
		}
		d.Deliveries = append(d.Deliveries, ds...)
	}
	return d, nil
}

// tenants is the tenant asked for, or every tenant, sorted.
func (a *Dashboard) tenants(ctx context.Context, tenant string) ([]string, error) {
	if tenant != "" {
		return []string{tenant}, nil
	}
	ts, err := a.deps.Orders.Tenants(ctx)
	slices.Sort(ts)
	return ts, err
}

func adminEndpoint(st *webhooks.EndpointState) Endpoint {
	return Endpoint{Tenant: st.Tenant, Endpoint: st.Endpoint, Health: st.Health, FailureStreak: st.FailureStreak, OpenUntil: st.OpenUntil}
}

// endpoints lists the endpoints of the tenant, or of every tenant.
func (a *Dashboard) endpoints(ctx context.Context, tenant string) (EndpointList, error) {
	out := EndpointList{Data: []Endpoint{}}
	ts, err := a.tenants(ctx, tenant)
	if err != nil {
		return out, err
	}
	states, err := a.deps.Webhooks.EndpointStates(ctx, ts)
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
func (a *Dashboard) adminEnableEndpoint(ctx context.Context, tenant, id string) (*Endpoint, error) {
	if !validTenant(tenant) || !webhooks.ValidEndpointID(id) {
		return nil, webhooks.ErrEndpointNotFound
	}
	if _, err := a.deps.WebhookQueue.EnableEndpoint(ctx, tenant, id); err != nil {
		return nil, err
	}
	states, err := a.deps.Webhooks.EndpointStates(ctx, []string{tenant})
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

// The states of the deliveries that the failed deliveries list.
const (
	deliveriesFailed   = "failed"   // in the dead-letter queue
	deliveriesRetrying = "retrying" // waiting for their next attempt
)

// deliveryQuery is a search of failed or retrying deliveries.
type deliveryQuery struct {
	Status string
	Tenant string
	Limit  int
	Offset int
}

func parseDeliveryQuery(c *gin.Context) (deliveryQuery, *server.Problem) {
	var fe []orders.FieldError
	q := deliveryQuery{Tenant: parseTenant(c, &fe), Status: c.DefaultQuery("status", deliveriesFailed)}
	if q.Status != deliveriesFailed && q.Status != deliveriesRetrying {
		fe = append(fe, orders.FieldError{Field: "status", Reason: "must be failed or retrying"})
	}
	q.Limit = server.ParseLimit(c, adminDefaultLimit, adminMaxLimit, &fe)
	if cur := c.Query("cursor"); cur != "" {
		n, err := strconv.Atoi(cur)
		if err != nil || n < 1 || strconv.Itoa(n) != cur {
			fe = append(fe, orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"})
		}
		q.Offset = n
	}
	return q, server.FieldProblem(fe)
}

// failedDeliveries lists the deliveries in the dead-letter queue, or those
// waiting to retry.
func (a *Dashboard) failedDeliveries(ctx context.Context, q deliveryQuery) (DeliveryList, error) {
	out := DeliveryList{Data: []Delivery{}}
	list := a.deps.Queues.FailedDeliveries
	if q.Status == deliveriesRetrying {
		list = a.deps.Queues.RetryingDeliveries
	}
	failed, next, err := list(ctx, q.Tenant, q.Offset, q.Limit)
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
	ds, err := a.deps.Webhooks.DeliveriesOf(ctx, refs)
	if err != nil {
		return out, err
	}
	for i, d := range ds {
		if d == nil {
			continue // expired: nothing left to redeliver
		}
		f := failed[i]
		ad := Delivery{Tenant: f.Ref.Tenant, Delivery: d, LastError: f.LastError}
		if !f.FailedAt.IsZero() {
			at := f.FailedAt.UTC()
			ad.FailedAt = &at
		}
		if !f.NextAttemptAt.IsZero() {
			at := f.NextAttemptAt.UTC()
			ad.NextAttemptAt = &at
		}
		out.Data = append(out.Data, ad)
	}
	return out, nil
}

// adminDelivery reads one delivery of the tenant.
func (a *Dashboard) adminDelivery(ctx context.Context, tenant, id string) (*Delivery, error) {
	if !validTenant(tenant) || !webhooks.ValidDeliveryID(id) {
		return nil, webhooks.ErrDeliveryNotFound
	}
	d, err := a.deps.Webhooks.Delivery(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	return &Delivery{Tenant: tenant, Delivery: d}, nil
}

// redeliver runs the tenant's delivery again, also from the dead-letter queue.
func (a *Dashboard) redeliver(ctx context.Context, tenant, id string) (*Delivery, error) {
	if !validTenant(tenant) || !webhooks.ValidDeliveryID(id) {
		return nil, webhooks.ErrDeliveryNotFound
	}
	d, err := a.deps.WebhookQueue.Redeliver(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	return &Delivery{Tenant: tenant, Delivery: d}, nil
}

// breakers is each downstream's breaker (none without a reporter).
func (a *Dashboard) breakers(ctx context.Context) map[string]server.BreakerState {
	if a.deps.Breakers == nil {
		return map[string]server.BreakerState{}
	}
	return a.deps.Breakers.Breakers(ctx)
}

// stats gathers the headline figures.
func (a *Dashboard) stats(ctx context.Context) (*Stats, error) {
	now := a.cfg.Now().UTC()
	st := &Stats{At: now, WindowSeconds: int(statsWindow / time.Second), Queues: []QueueStats{}}
	var err error
	if st.OrdersByStatus, err = a.deps.Orders.CountCreatedSince(ctx, now.Add(-statsWindow)); err != nil {
		return nil, err
	}
	ts, err := a.deps.Orders.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	st.Tenants = len(ts)
	if a.deps.Queues != nil {
		if st.Queues, err = a.deps.Queues.QueueStats(ctx); err != nil {
			return nil, err
		}
	}
	st.Breakers = a.breakers(ctx)
	return st, nil
}

// hasWebhookAdmin reports whether the webhook parts of the admin API can run.
func (a *Dashboard) hasWebhookAdmin() bool {
	return a.deps.Webhooks != nil && a.deps.WebhookQueue != nil
}
