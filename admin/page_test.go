package admin_test

// Tests of the dashboard's own pages (/admin/…, HTML), on the real App,
// through apitest so that every answer is validated against openapi.yaml.

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

const xss = `<script>alert(1)</script>`

// page GETs a dashboard page with the admin key and checks it is HTML with
// the status.
func page(t *testing.T, b *testBundle, path string, status int) string {
	t.Helper()
	resp, body := b.do(t, "GET", path, adminKey, "")
	wantStatus(t, resp, body, status)
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	html := string(body)
	// Nothing runs, nothing comes from elsewhere.
	for _, bad := range []string{"<script", " src=", "@import", "<link"} {
		if strings.Contains(html, bad) {
			t.Errorf("GET %s: the page has %q", path, bad)
		}
	}
	if !strings.Contains(html, `<a href="/admin/queues">Queues</a>`) || !strings.Contains(html, `<form method="post" action="/admin/logout"`) {
		t.Errorf("GET %s: the page has no navigation", path)
	}
	return html
}

func wantIn(t *testing.T, what, html string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(html, p) {
			t.Errorf("%s lacks %q", what, p)
		}
	}
}

// post submits a dashboard form with the admin key and returns where it
// sends the browser.
func post(t *testing.T, b *testBundle, path string) string {
	t.Helper()
	resp, body := b.do(t, "POST", path, adminKey, "", withHeader("Content-Type", "application/x-www-form-urlencoded"))
	wantStatus(t, resp, body, http.StatusSeeOther)
	return resp.Header.Get("Location")
}

// TestAdminPagesEscape shows an order's metadata and an endpoint's
// description that hold a script: both appear as text.
func TestAdminPagesEscape(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	rcv := newReceiver(t, http.StatusOK)
	ep := b.createEndpoint(t, keyA, rcv.URL, xss)
	req := marketOrder()
	req.Metadata = map[string]string{"note": xss, xss: "key"}
	o := b.place(t, keyA, req)

	escaped := "&lt;script&gt;alert(1)&lt;/script&gt;"
	html := page(t, b, "/admin/orders/tenant-a/"+o.ID, http.StatusOK)
	if strings.Count(html, escaped) != 2 {
		t.Errorf("the order page shows the metadata key and value escaped %d times, want 2:\n%s", strings.Count(html, escaped), html)
	}
	html = page(t, b, "/admin/endpoints", http.StatusOK)
	wantIn(t, "the endpoints page", html, `<td class="description">`+escaped+`</td>`, ep.ID)
}

func TestAdminPages(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	b.start(t)
	down := newReceiver(t, http.StatusInternalServerError)
	failed := failAll(t, b, down, 2)
	gone := newReceiver(t, http.StatusGone)
	epGone := b.createEndpoint(t, keyB, gone.URL, "retired")
	ob := b.place(t, keyB, marketOrder())
	b.waitTerminal(t, keyB, ob.ID)
	list := adminGet[admin.OrderList](t, b, "/admin/api/orders")
	if len(list.Data) != 3 {
		t.Fatalf("%d orders, want 3", len(list.Data))
	}

	resp, body := b.do(t, "GET", "/admin", adminKey, "")
	wantStatus(t, resp, body, http.StatusFound)
	if loc := resp.Header.Get("Location"); loc != "/admin/" {
		t.Errorf("GET /admin: Location %q", loc)
	}

	html := page(t, b, "/admin/", http.StatusOK)
	wantIn(t, "the overview", html, `<b id="orders-executed">3</b>`, `<b id="orders-pending">0</b>`, `<b id="tenants">2</b>`,
		`<tr data-queue="webhooks">`, `<tr data-breaker="portfolio">`, `<tr data-breaker="execution">`, `aria-current="page">Overview`)

	// Orders: search, pages, one order.
	html = page(t, b, "/admin/orders", http.StatusOK)
	for _, o := range list.Data {
		wantIn(t, "the orders page", html, `<a href="/admin/orders/`+o.Tenant+`/`+o.Order.ID+`">`)
	}
	html = page(t, b, "/admin/orders?limit=2", http.StatusOK)
	next := regexp.MustCompile(`<a class="next" href="([^"]+)"`).FindStringSubmatch(html)
	if next == nil || strings.Count(html, "data-order-id=") != 2 {
		t.Fatalf("page 1 of 2 orders has no next link:\n%s", html)
	}
	html = page(t, b, strings.ReplaceAll(next[1], "&amp;", "&"), http.StatusOK)
	if strings.Count(html, "data-order-id=") != 1 || !strings.Contains(html, list.Data[2].Order.ID) || strings.Contains(html, `class="next"`) {
		t.Errorf("page 2 (%s) is not the last order:\n%s", next[1], html)
	}
	html = page(t, b, "/admin/orders?tenant=tenant-b&status=executed", http.StatusOK)
	if strings.Count(html, "data-order-id=") != 1 || !strings.Contains(html, ob.ID) || !strings.Contains(html, `<option selected>executed</option>`) {
		t.Errorf("tenant-b's executed orders:\n%s", html)
	}
	wantIn(t, "a search for a bad status", page(t, b, "/admin/orders?status=lost", http.StatusUnprocessableEntity), "status: must be one of")
	html = page(t, b, "/admin/orders/tenant-b/"+ob.ID, http.StatusOK)
	wantIn(t, "the order page", html, `data-status="executed"`, "<td>order.funds_reserved</td>", "None.")
	page(t, b, "/admin/orders/tenant-a/"+ob.ID, http.StatusNotFound)

	// Failed deliveries: one row and one form each; a redelivery goes to
	// the delivery's page, which shows it delivered.
	html = page(t, b, "/admin/deliveries", http.StatusOK)
	for _, id := range failed {
		wantIn(t, "the failed deliveries page", html,
			`<tr data-delivery-id="`+id+`"><td class="mono"><a href="/admin/deliveries/tenant-a/`+id+`">`,
			`<form class="inline redeliver" method="post" action="/admin/deliveries/tenant-a/`+id+`/redeliver"><input type="hidden" name="csrf_token" value="">`+
				`<button type="submit" class="redeliver">`)
	}
	html = page(t, b, "/admin/deliveries/tenant-a/"+failed[0], http.StatusOK)
	wantIn(t, "the delivery page", html, `<span id="delivery-status" data-status="failed"`, "the receiver answered 500")
	down.status.Store(http.StatusOK)
	if loc := post(t, b, "/admin/deliveries/tenant-a/"+failed[0]+"/redeliver"); loc != "/admin/deliveries/tenant-a/"+failed[0] {
		t.Errorf("redeliver: Location %q", loc)
	}
	waitFor(t, 20*time.Second, "the page shows the delivery delivered", func() bool {
		return strings.Contains(page(t, b, "/admin/deliveries/tenant-a/"+failed[0], http.StatusOK), `data-status="delivered"`)
	})
	page(t, b, "/admin/deliveries/tenant-b/"+failed[0], http.StatusNotFound)
	page(t, b, "/admin/deliveries?limit=500", http.StatusUnprocessableEntity)

	// Endpoints: the disabled one says why and can be enabled.
	var eps admin.EndpointList
	waitFor(t, 20*time.Second, "tenant-b's endpoint disabled", func() bool {
		eps = adminGet[admin.EndpointList](t, b, "/admin/api/endpoints?tenant=tenant-b")
		return len(eps.Data) == 1 && eps.Data[0].Health == webhooks.HealthDisabled
	})
	html = page(t, b, "/admin/endpoints", http.StatusOK)
	wantIn(t, "the endpoints page", html, webhooks.ReasonGone,
		`<form class="inline enable" method="post" action="/admin/endpoints/tenant-b/`+epGone.ID+`/enable"><input type="hidden" name="csrf_token" value=""><button type="submit" class="enable">Enable</button>`)
	if strings.Count(html, `class="enable"`) != 1 {
		t.Errorf("the endpoints page has %d enable buttons, want 1 (for the disabled endpoint)", strings.Count(html, `class="enable"`))
	}
	gone.status.Store(http.StatusOK)
	if loc := post(t, b, "/admin/endpoints/tenant-b/"+epGone.ID+"/enable"); loc != "/admin/endpoints" {
		t.Errorf("enable: Location %q", loc)
	}
	if strings.Contains(page(t, b, "/admin/endpoints", http.StatusOK), `class="enable"`) {
		t.Error("the enabled endpoint still has an enable button")
	}
	resp, body = b.do(t, "POST", "/admin/endpoints/tenant-b/ep_nope/enable", adminKey, "")
	wantStatus(t, resp, body, http.StatusNotFound)

	// A tenant's key is not an admin key.
	resp, body = b.do(t, "GET", "/admin/orders", keyA, "")
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden")
}

// cssOf returns the declarations of the layout's rule whose selectors
// include sel ("" for none).
func cssOf(html, sel string) string {
	style := html[strings.Index(html, "<style>")+len("<style>") : strings.Index(html, "</style>")]
	for rule := range strings.SplitSeq(style, "}") {
		sels, decl, ok := strings.Cut(rule, "{")
		if !ok {
			continue
		}
		for s := range strings.SplitSeq(sels, ",") {
			if strings.TrimSpace(s) == sel {
				return strings.TrimSpace(decl)
			}
		}
	}
	return ""
}

// TestAdminPagesFigures: numbers with thousands separators and no
// exponent, durations as people read them, a paused column that always
// says something, and cancelled orders not painted as failed ones.
func TestAdminPagesFigures(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	req := marketOrder()
	req.Quantity = 100_000_000
	big := b.place(t, keyA, req)
	req = marketOrder()
	req.Type, req.LimitPrice = orders.Limit, new(float64)
	*req.LimitPrice = 1234567.25
	limit := b.place(t, keyA, req)

	html := page(t, b, "/admin/orders", http.StatusOK)
	wantIn(t, "the orders page", html, `<td class="num">100,000,000</td>`)
	if strings.Contains(html, "e+") {
		t.Errorf("the orders page shows a number with an exponent:\n%s", html)
	}
	wantIn(t, "the order page", page(t, b, "/admin/orders/tenant-a/"+big.ID, http.StatusOK), "buy 100,000,000 ACME")
	wantIn(t, "the order page", page(t, b, "/admin/orders/tenant-a/"+limit.ID, http.StatusOK), "at 1,234,567.25")

	// Every queue says whether it is paused; the latency of the orders
	// waiting in the queue (no worker runs) reads as a duration.
	cell := regexp.MustCompile(`<tr data-queue="(\w+)">.*?<td class="num">([^<]*)</td>.*<td class="paused">(.*?)</td></tr>`)
	queues := func() map[string][2]string {
		out := map[string][2]string{}
		for _, m := range cell.FindAllStringSubmatch(page(t, b, "/admin/", http.StatusOK), -1) {
			out[m[1]] = [2]string{m[2], m[3]}
		}
		return out
	}
	got := queues()
	if len(got) < 3 {
		t.Fatalf("the overview shows %d queues, want 3 or more: %v", len(got), got)
	}
	latency := regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|µs|ms|s|m|h))+$`)
	for q, c := range got {
		if c[1] != "running" {
			t.Errorf("queue %s: paused cell %q, want running", q, c[1])
		}
		if !latency.MatchString(c[0]) {
			t.Errorf("queue %s: latency %q, want a duration such as 340ms or 1.5s", q, c[0])
		}
	}
	// The overview's line of a kind sums its shards: paused when one is.
	if err := b.app.Inspector().PauseQueue(b.app.Enq.Queue(jobs.QueueOrders, big.ID)); err != nil {
		t.Fatal(err)
	}
	if c := queues()["orders"]; !strings.Contains(c[1], "paused") {
		t.Errorf("paused queue orders: paused cell %q", c[1])
	}

	// Cancelled is an outcome the caller asked for, not a failure.
	if c, f := cssOf(html, ".s-cancelled"), cssOf(html, ".s-failed"); c == "" || c == f {
		t.Errorf("cancelled is painted %q, failed %q: want a style of its own", c, f)
	}
}
