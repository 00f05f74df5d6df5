package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// The dashboard's own pages: server-rendered with html/template, which
// escapes every value for its context (so an order's metadata or an
// endpoint's description is shown as text, never run), from templates
// embedded in the binary. They need no script and load nothing from
// elsewhere. The queues half of the dashboard is asynqmon's, at
// /admin/queues.

//go:embed html/*.html
var adminHTML embed.FS

var adminFuncs = template.FuncMap{
	"ts":  formatTime,
	"ms":  formatMillis,
	"num": formatNumber,
	// in shows how long until t, from now: "in 1m30s", "due".
	"in": func(t *time.Time, now time.Time) string {
		if t == nil {
			return ""
		}
		if d := t.Sub(now); d > 0 {
			return "in " + human.Duration(d.Round(time.Second))
		}
		return "due"
	},
}

// adminPages are the parsed pages, by file name: each is the layout with
// the page's "content".
var adminPages = func() map[string]*template.Template {
	out := make(map[string]*template.Template)
	for _, name := range []string{"overview", "orders", "order", "endpoints", "deliveries", "delivery", "error"} {
		out[name] = template.Must(template.New(name).Funcs(adminFuncs).ParseFS(adminHTML, "html/layout.html", "html/"+name+".html"))
	}
	return out
}()

// formatTime shows a time.Time or *time.Time in UTC, to the millisecond;
// nothing for nil or the zero time.
func formatTime(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

// pageData is what the layout needs, and the page's own Data.
type pageData struct {
	Title, Nav, CSRF, Error string
	Data                    any
	Statuses                []orders.Status
	// Fields of the list pages.
	Query   orderQuery
	Tenant  string
	List    any
	NextURL string
	// The failed deliveries page: Status is the one state shown ("" for
	// both), Retrying and its next page the retrying deliveries.
	Status          string
	Retrying        any
	RetryingNextURL string
	// Now is when the page was made, for times shown relative to it.
	Now time.Time
}

// adminPageRoutes registers the dashboard's HTML pages under /admin.
// Authentication and CSRF are applied by the group.
func (a *Dashboard) adminPageRoutes(g *gin.RouterGroup) {
	if a.deps.Orders == nil {
		return
	}
	g.GET("", func(c *gin.Context) { c.Redirect(http.StatusFound, "/admin/") })
	g.GET("/", a.overviewPage)
	g.GET("/orders", a.ordersPage)
	g.GET("/orders/:tenant/:id", a.orderPage)
	if !a.hasWebhookAdmin() {
		return
	}
	g.GET("/endpoints", a.endpointsPage)
	g.POST("/endpoints/:tenant/:id/enable", a.enablePage)
	g.GET("/deliveries/:tenant/:id", a.deliveryPage)
	g.POST("/deliveries/:tenant/:id/redeliver", a.redeliverPage)
	if a.deps.Queues != nil {
		g.GET("/deliveries", a.deliveriesPage)
	}
}

// render sends the page, or a 500 page when it fails to render.
func (a *Dashboard) render(c *gin.Context, status int, page string, d pageData) {
	d.CSRF = a.csrfToken(c)
	var buf bytes.Buffer
	if err := adminPages[page].ExecuteTemplate(&buf, "layout", d); err != nil {
		c.Error(fmt.Errorf("render %s: %w", page, err))
		status = http.StatusInternalServerError
		buf.Reset()
		_ = adminPages["error"].ExecuteTemplate(&buf, "layout", pageData{Title: "Internal error", Error: "the page could not be shown", CSRF: d.CSRF})
	}
	h := c.Writer.Header()
	// Nothing on these pages comes from elsewhere, runs, or is framed.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

// pageError shows err as an HTML page with the status of its problem.
func (a *Dashboard) pageError(c *gin.Context, nav string, err error) {
	p := server.AsProblem(err)
	c.Error(p) // the request log shows the cause
	msg := p.Detail
	for _, f := range p.Errors {
		msg += "; " + f.Field + ": " + f.Reason
	}
	a.render(c, p.Status, "error", pageData{Title: p.Title, Nav: nav, Error: msg})
	c.Abort()
}

func (a *Dashboard) overviewPage(c *gin.Context) {
	st, err := a.stats(c.Request.Context())
	if err != nil {
		a.pageError(c, "overview", err)
		return
	}
	a.render(c, http.StatusOK, "overview", pageData{Title: "Overview", Nav: "overview", Data: st, Statuses: orders.Statuses})
}

func (a *Dashboard) ordersPage(c *gin.Context) {
	d := pageData{Title: "Orders", Nav: "orders", Statuses: orders.Statuses}
	q, p := parseOrderQuery(c)
	d.Query = q
	if p != nil {
		a.pageError(c, "orders", p)
		return
	}
	list, err := a.searchOrders(c.Request.Context(), q)
	if err != nil {
		a.pageError(c, "orders", err)
		return
	}
	d.List = list
	if list.NextCursor != "" {
		v := url.Values{"cursor": {list.NextCursor}}
		if q.Tenant != "" {
			v.Set("tenant", q.Tenant)
		}
		if q.Status != "" {
			v.Set("status", string(q.Status))
		}
		if q.Limit != adminDefaultLimit {
			v.Set("limit", strconv.Itoa(q.Limit))
		}
		d.NextURL = "/admin/orders?" + v.Encode()
	}
	a.render(c, http.StatusOK, "orders", d)
}

func (a *Dashboard) orderPage(c *gin.Context) {
	o, err := a.orderDetail(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		a.pageError(c, "orders", err)
		return
	}
	a.render(c, http.StatusOK, "order", pageData{Title: "Order " + o.Order.ID, Nav: "orders", Data: o})
}

func (a *Dashboard) endpointsPage(c *gin.Context) {
	tenant, p := parseTenantQuery(c)
	if p != nil {
		a.pageError(c, "endpoints", p)
		return
	}
	list, err := a.endpoints(c.Request.Context(), tenant)
	if err != nil {
		a.pageError(c, "endpoints", err)
		return
	}
	a.render(c, http.StatusOK, "endpoints", pageData{Title: "Webhook endpoints", Nav: "endpoints", Tenant: tenant, List: list})
}

func (a *Dashboard) enablePage(c *gin.Context) {
	if _, err := a.adminEnableEndpoint(c.Request.Context(), c.Param("tenant"), c.Param("id")); err != nil {
		a.pageError(c, "endpoints", err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/admin/endpoints")
}

// deliveriesPage shows the deliveries waiting to retry and those in the
// dead-letter queue; ?status= shows one of the two, a page at a time.
func (a *Dashboard) deliveriesPage(c *gin.Context) {
	q, p := parseDeliveryQuery(c)
	if p != nil {
		a.pageError(c, "deliveries", p)
		return
	}
	both := c.Query("status") == ""
	d := pageData{Title: "Failed deliveries", Nav: "deliveries", Tenant: q.Tenant, Now: a.cfg.Now().UTC()}
	if !both {
		d.Status = q.Status
	}
	nextURL := func(status, cursor string) string {
		if cursor == "" {
			return ""
		}
		v := url.Values{"cursor": {cursor}, "status": {status}}
		if q.Tenant != "" {
			v.Set("tenant", q.Tenant)
		}
		if q.Limit != adminDefaultLimit {
			v.Set("limit", strconv.Itoa(q.Limit))
		}
		return "/admin/deliveries?" + v.Encode()
	}
	if both || q.Status == deliveriesRetrying {
		rq := q
		rq.Status = deliveriesRetrying
		list, err := a.failedDeliveries(c.Request.Context(), rq)
		if err != nil {
			a.pageError(c, "deliveries", err)
			return
		}
		d.Retrying, d.RetryingNextURL = list, nextURL(deliveriesRetrying, list.NextCursor)
	}
	if both || q.Status == deliveriesFailed {
		fq := q
		fq.Status = deliveriesFailed
		list, err := a.failedDeliveries(c.Request.Context(), fq)
		if err != nil {
			a.pageError(c, "deliveries", err)
			return
		}
		d.List, d.NextURL = list, nextURL(deliveriesFailed, list.NextCursor)
	}
	a.render(c, http.StatusOK, "deliveries", d)
}

func (a *Dashboard) deliveryPage(c *gin.Context) {
	d, err := a.adminDelivery(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		a.pageError(c, "deliveries", err)
		return
	}
	a.render(c, http.StatusOK, "delivery", pageData{Title: "Delivery " + d.Delivery.ID, Nav: "deliveries", Data: d})
}

func (a *Dashboard) redeliverPage(c *gin.Context) {
	tenant, id := c.Param("tenant"), c.Param("id")
	if _, err := a.redeliver(c.Request.Context(), tenant, id); err != nil {
		a.pageError(c, "deliveries", err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/admin/deliveries/"+tenant+"/"+id)
}
