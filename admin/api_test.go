package admin_test

// Tests of the admin API (/admin/api/…), on the real App (API, worker,
// stores, queues, the simulator and a webhook receiver on a real
// redis-server), through apitest, so that every answer is also validated
// against openapi.yaml.

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// adminKey is an admin key (of tenant ops).
const adminKey = "admin-key-of-ops-0123456789"

// setupAdmin builds an App like setup, with an admin key and webhooks that
// may go to 127.0.0.1, two attempts a delivery, the retry at once; the
// worker runs when the test calls start.
func setupAdmin(t *testing.T, mut ...func(*app.Config)) *testBundle {
	t.Helper()
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	ds := downstream.Config{BaseURL: simSrv.URL, Timeout: 500 * time.Millisecond, Budget: time.Second}
	cfg := app.Config{
		Redis:     redistest.Shared(t).NewClient(t),
		API:       true,
		Worker:    true,
		Server:    server.Config{APIKeys: apiKeys, AdminKeys: map[string]string{adminKey: "ops"}},
		Portfolio: ds,
		Execution: ds,
		Saga:      jobs.SagaConfig{LeaseTTL: 2 * time.Second},
		Webhooks: app.WebhooksConfig{
			Guard: webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true},
			Store: webhooks.StoreConfig{MaxAttempts: 2},
			// No breaker: a redelivery goes at once after any number of failures.
			Deliverer: webhooks.DelivererConfig{Schedule: []time.Duration{10 * time.Millisecond}, Jitter: -1, Timeout: 5 * time.Second, BreakerThreshold: 1000},
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, m := range mut {
		m(&cfg)
	}
	a, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &testBundle{app: a, sim: s})
}

// receiver is a webhook receiver on 127.0.0.1 answering status.
type receiver struct {
	*httptest.Server
	status atomic.Int64
	hits   atomic.Int64
}

func newReceiver(t *testing.T, status int) *receiver {
	t.Helper()
	r := &receiver{}
	r.status.Store(int64(status))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.hits.Add(1)
		w.WriteHeader(int(r.status.Load()))
	}))
	t.Cleanup(r.Close)
	return r
}

// createEndpoint registers an endpoint of key's tenant.
func (b *testBundle) createEndpoint(t *testing.T, key, url, description string) webhooks.Endpoint {
	t.Helper()
	resp, body := b.do(t, "POST", "/v1/webhook-endpoints", key, jsonOf(t, webhooks.EndpointInput{URL: url, Description: description}))
	wantStatus(t, resp, body, http.StatusCreated)
	return decode[webhooks.Endpoint](t, body)
}

// admin GETs an admin API path with the admin key and decodes the 200.
func adminGet[T any](t *testing.T, b *testBundle, path string) T {
	t.Helper()
	resp, body := b.do(t, "GET", path, adminKey, "")
	wantStatus(t, resp, body, http.StatusOK)
	return decode[T](t, body)
}

func ids(list admin.OrderList) []string {
	var out []string
	for _, o := range list.Data {
		out = append(out, o.Tenant+"/"+o.Order.ID)
	}
	return out
}

func TestAdminAPIOrders(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	b.sim.SetBalance("poor", 0)
	b.start(t)
	var placed []string // tenant/id, oldest first
	for i, key := range []string{keyA, keyB, keyA, keyA, keyB} {
		req := marketOrder()
		if i == 2 {
			req.AccountID = "poor"
		}
		o := b.place(t, key, req)
		placed = append(placed, apiKeys[key]+"/"+o.ID)
		b.waitTerminal(t, key, o.ID)
	}
	newest := slices.Clone(placed)
	slices.Reverse(newest)
	id := func(i int) string { return placed[i][strings.Index(placed[i], "/")+1:] }

	all := adminGet[admin.OrderList](t, b, "/admin/api/orders")
	if diff := cmp.Diff(newest, ids(all)); diff != "" || all.NextCursor != "" {
		t.Errorf("every order, newest first (-want +got):\n%s\nnext_cursor %q", diff, all.NextCursor)
	}

	// Pages across tenants, then within one.
	p1 := adminGet[admin.OrderList](t, b, "/admin/api/orders?limit=3")
	p2 := adminGet[admin.OrderList](t, b, "/admin/api/orders?limit=3&cursor="+p1.NextCursor)
	if got := append(ids(p1), ids(p2)...); !slices.Equal(got, newest) || p1.NextCursor == "" || p2.NextCursor != "" {
		t.Errorf("pages %v (next %q) + %v (next %q), want %v", ids(p1), p1.NextCursor, ids(p2), p2.NextCursor, newest)
	}
	b1 := adminGet[admin.OrderList](t, b, "/admin/api/orders?tenant=tenant-b&limit=1")
	b2 := adminGet[admin.OrderList](t, b, "/admin/api/orders?tenant=tenant-b&limit=1&cursor="+b1.NextCursor)
	if got := append(ids(b1), ids(b2)...); !slices.Equal(got, []string{placed[4], placed[1]}) {
		t.Errorf("tenant-b's pages: %v, want %v", got, []string{placed[4], placed[1]})
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"status=rejected", []string{placed[2]}},
		{"status=executed&tenant=tenant-a", []string{placed[3], placed[0]}},
		{"status=pending", nil},
		{"tenant=nobody", nil},
		{"id=" + id(1), []string{placed[1]}},
		{"id=" + id(1) + "&tenant=tenant-b", []string{placed[1]}},
		{"id=" + id(1) + "&tenant=tenant-a", nil},
		{"id=" + id(2) + "&status=executed", nil},
		{"id=" + id(2) + "&status=rejected", []string{placed[2]}},
		{"id=0190f1a2-7b3c-7d4e-8f90-123456789abc", nil},
	}
	for _, tt := range tests {
		got := adminGet[admin.OrderList](t, b, "/admin/api/orders?"+tt.query)
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("?%s: %v, want %v", tt.query, ids(got), tt.want)
		}
	}

	resp, body := b.do(t, "GET", "/admin/api/orders?status=lost&limit=0&cursor=x&tenant=Big&id=7", adminKey, "")
	wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed",
		orders.FieldError{Field: "tenant", Reason: "must be 1-64 of a-z, 0-9, '_' and '-'"},
		orders.FieldError{Field: "status", Reason: "must be one of pending, validated, funds_reserved, executed, rejected, failed, cancelled"},
		orders.FieldError{Field: "id", Reason: "must be an order id (a UUID)"},
		orders.FieldError{Field: "limit", Reason: "must be an integer from 1 to 200"},
		orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"})

	// Tenants' keys are not admin keys.
	resp, body = b.do(t, "GET", "/admin/api/orders", keyA, "")
	wantProblem(t, resp, body, http.StatusForbidden, "forbidden")
}

func TestAdminAPIOrderDetailAndStats(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	b.start(t)
	rcv := newReceiver(t, http.StatusOK)
	ep := b.createEndpoint(t, keyA, rcv.URL, "ledger")
	req := marketOrder()
	req.CallbackURL = rcv.URL + "/callback"
	o := b.place(t, keyA, req)
	b.waitTerminal(t, keyA, o.ID)
	other := b.place(t, keyB, marketOrder())
	b.waitTerminal(t, keyB, other.ID)

	var d admin.OrderDetail
	waitFor(t, 20*time.Second, "both deliveries delivered", func() bool {
		d = adminGet[admin.OrderDetail](t, b, "/admin/api/orders/tenant-a/"+o.ID)
		return len(d.Deliveries) == 2 && d.Deliveries[0].Status == webhooks.DeliveryDelivered && d.Deliveries[1].Status == webhooks.DeliveryDelivered
	})
	if d.Tenant != "tenant-a" || d.Order.ID != o.ID || d.Order.Status != orders.Executed {
		t.Errorf("detail of %s: tenant %s, order %s %s", o.ID, d.Tenant, d.Order.ID, d.Order.Status)
	}
	if got, want := eventTypes(d.Events), []orders.EventType{"order.created", "order.validated", "order.funds_reserved", "order.executed"}; !slices.Equal(got, want) {
		t.Errorf("timeline %v, want %v", got, want)
	}
	targets := []string{d.Deliveries[0].EndpointID + " " + d.Deliveries[0].URL, d.Deliveries[1].EndpointID + " " + d.Deliveries[1].URL}
	if want := []string{ep.ID + " " + rcv.URL, " " + rcv.URL + "/callback"}; !slices.Equal(targets, want) {
		t.Errorf("deliveries to %q, want %q", targets, want)
	}
	if d.Deliveries[0].EventID != webhooks.EventID("tenant-a", o.ID, d.Order.Version) || len(d.Deliveries[0].Attempts) != 1 {
		t.Errorf("delivery %+v: want the event of the order's end, with its one attempt", d.Deliveries[0])
	}

	for _, path := range []string{
		"/admin/api/orders/tenant-b/" + o.ID, // another tenant's id
		"/admin/api/orders/tenant-a/0190f1a2-7b3c-7d4e-8f90-123456789abc",
		"/admin/api/orders/tenant-a/not-an-id",
		"/admin/api/orders/Not%20A%20Tenant/" + o.ID,
	} {
		resp, body := b.do(t, "GET", path, adminKey, "")
		wantProblem(t, resp, body, http.StatusNotFound, "not_found")
	}

	st := adminGet[admin.Stats](t, b, "/admin/api/stats")
	want := map[orders.Status]int64{orders.Executed: 2}
	for _, s := range orders.Statuses {
		if s != orders.Executed {
			want[s] = 0
		}
	}
	if diff := cmp.Diff(want, st.OrdersByStatus); diff != "" || st.Tenants != 2 || st.WindowSeconds != 3600 {
		t.Errorf("stats: tenants %d, window %d, orders (-want +got):\n%s", st.Tenants, st.WindowSeconds, diff)
	}
	var queues []string
	for _, q := range st.Queues {
		queues = append(queues, q.Queue)
	}
	if !slices.Equal(queues, []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks}) {
		t.Errorf("queues %v", queues)
	}
	if st.Breakers["portfolio"].State != "closed" || st.Breakers["execution"].State != "closed" {
		t.Errorf("breakers %+v", st.Breakers)
	}
	br := adminGet[admin.Breakers](t, b, "/admin/api/breakers")
	if diff := cmp.Diff(st.Breakers, br.Breakers); diff != "" {
		t.Errorf("/admin/api/breakers vs /admin/api/stats (-stats +breakers):\n%s", diff)
	}
}

func TestAdminAPIEndpointsEnable(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	b.start(t)
	gone := newReceiver(t, http.StatusGone)
	ok := newReceiver(t, http.StatusOK)
	epGone := b.createEndpoint(t, keyA, gone.URL, "retired")
	epOK := b.createEndpoint(t, keyA, ok.URL, "live")
	o := b.place(t, keyA, marketOrder())
	b.waitTerminal(t, keyA, o.ID)
	b.waitTerminal(t, keyB, b.place(t, keyB, marketOrder()).ID) // a tenant without endpoints

	var list admin.EndpointList
	waitFor(t, 20*time.Second, "the 410 endpoint disabled", func() bool {
		list = adminGet[admin.EndpointList](t, b, "/admin/api/endpoints")
		return len(list.Data) == 2 && list.Data[0].Health == webhooks.HealthDisabled
	})
	got := list.Data[0]
	if got.Tenant != "tenant-a" || got.Endpoint.ID != epGone.ID || got.Endpoint.DisabledReason != webhooks.ReasonGone || got.FailureStreak != 1 {
		t.Errorf("disabled endpoint: %+v %+v", got, got.Endpoint)
	}
	if h := list.Data[1]; h.Endpoint.ID != epOK.ID || h.Health != webhooks.HealthHealthy || h.Endpoint.Description != "live" {
		t.Errorf("healthy endpoint: %+v %+v", h, h.Endpoint)
	}
	if only := adminGet[admin.EndpointList](t, b, "/admin/api/endpoints?tenant=tenant-b"); len(only.Data) != 0 {
		t.Errorf("tenant-b has endpoints %+v", only.Data)
	}
	resp, body := b.do(t, "GET", "/admin/api/endpoints?tenant=A", adminKey, "")
	wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", orders.FieldError{Field: "tenant", Reason: "must be 1-64 of a-z, 0-9, '_' and '-'"})

	// Enabled again, the held delivery goes to the (now answering) receiver.
	gone.status.Store(http.StatusOK)
	hits := gone.hits.Load()
	resp, body = b.do(t, "POST", "/admin/api/endpoints/tenant-a/"+epGone.ID+"/enable", adminKey, "")
	wantStatus(t, resp, body, http.StatusOK)
	if e := decode[admin.Endpoint](t, body); e.Health != webhooks.HealthHealthy || e.Endpoint.Status != webhooks.EndpointEnabled || e.FailureStreak != 0 {
		t.Errorf("enabled endpoint: %+v %+v", e, e.Endpoint)
	}
	waitFor(t, 20*time.Second, "the held event redelivered", func() bool { return gone.hits.Load() > hits })
	for _, path := range []string{"/admin/api/endpoints/tenant-b/" + epGone.ID + "/enable", "/admin/api/endpoints/tenant-a/ep_nope/enable"} {
		resp, body = b.do(t, "POST", path, adminKey, "")
		wantProblem(t, resp, body, http.StatusNotFound, "not_found")
	}
}

// failAll makes n orders of tenant-a whose one delivery fails and lands in
// the dead-letter queue; it returns the deliveries' ids, oldest first.
func failAll(t *testing.T, b *testBundle, rcv *receiver, n int) []string {
	t.Helper()
	ep := b.createEndpoint(t, keyA, rcv.URL, "down")
	for range n {
		o := b.place(t, keyA, marketOrder())
		b.waitTerminal(t, keyA, o.ID)
	}
	var failed []string
	insp := b.app.Inspector()
	waitFor(t, 30*time.Second, "every delivery archived", func() bool {
		resp, body := b.do(t, "GET", "/v1/webhook-endpoints/"+ep.ID+"/deliveries?status=failed", keyA, "")
		wantStatus(t, resp, body, http.StatusOK)
		failed = failed[:0]
		for _, d := range decode[server.DeliveryList](t, body).Data {
			if info, err := insp.GetTaskInfo(b.app.Notifier.DeliveryQueue(d.ID), d.ID); err == nil && info.State == asynq.TaskStateArchived {
				failed = append(failed, d.ID)
			}
		}
		return len(failed) == n
	})
	slices.Reverse(failed)
	return failed
}

func TestAdminAPIFailedDeliveriesRedeliver(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t)
	b.start(t)
	rcv := newReceiver(t, http.StatusInternalServerError)
	failed := failAll(t, b, rcv, 3)

	list := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?status=failed")
	if len(list.Data) != 3 || list.NextCursor != "" {
		t.Fatalf("failed deliveries: %d, next %q; want 3", len(list.Data), list.NextCursor)
	}
	for _, d := range list.Data {
		if d.Tenant != "tenant-a" || d.Delivery.Status != webhooks.DeliveryFailed || d.Delivery.AttemptCount != 2 || d.FailedAt == nil || !strings.Contains(d.LastError, "500") {
			t.Errorf("failed delivery %+v: %+v", d, d.Delivery)
		}
		if !slices.Contains(failed, d.Delivery.ID) {
			t.Errorf("delivery %s is not one of %v", d.Delivery.ID, failed)
		}
	}
	p1 := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?limit=2&tenant=tenant-a")
	p2 := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?limit=2&tenant=tenant-a&cursor="+p1.NextCursor)
	if len(p1.Data) != 2 || p1.NextCursor == "" || len(p2.Data) != 1 || p2.NextCursor != "" {
		t.Errorf("pages of 2: %d (next %q), %d (next %q)", len(p1.Data), p1.NextCursor, len(p2.Data), p2.NextCursor)
	}
	if none := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?tenant=tenant-b"); len(none.Data) != 0 {
		t.Errorf("tenant-b has failed deliveries: %+v", none.Data)
	}
	resp, body := b.do(t, "GET", "/admin/api/deliveries?status=pending&cursor=-1", adminKey, "")
	wantProblem(t, resp, body, http.StatusUnprocessableEntity, "validation_failed",
		orders.FieldError{Field: "status", Reason: "must be failed or retrying"}, orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"})

	eps := adminGet[admin.EndpointList](t, b, "/admin/api/endpoints")
	if len(eps.Data) != 1 || eps.Data[0].Health != webhooks.HealthFailing || eps.Data[0].FailureStreak != 6 || eps.Data[0].Endpoint.FailingSince == nil {
		t.Errorf("the failing endpoint: %+v", eps.Data)
	}

	// One delivery's detail, then its redelivery to the mended receiver.
	id := failed[0]
	one := adminGet[admin.Delivery](t, b, "/admin/api/deliveries/tenant-a/"+id)
	if one.Delivery.ID != id || len(one.Delivery.Attempts) != 2 || one.Delivery.Attempts[1].StatusCode != 500 {
		t.Errorf("delivery %s: %+v", id, one.Delivery)
	}
	rcv.status.Store(http.StatusOK)
	resp, body = b.do(t, "POST", "/admin/api/deliveries/tenant-a/"+id+"/redeliver", adminKey, "")
	wantStatus(t, resp, body, http.StatusAccepted)
	if loc := resp.Header.Get("Location"); loc != "/admin/api/deliveries/tenant-a/"+id {
		t.Errorf("Location %q", loc)
	}
	if d := decode[admin.Delivery](t, body); d.Delivery.Status != webhooks.DeliveryPending && d.Delivery.Status != webhooks.DeliveryDelivered {
		t.Errorf("after redeliver: %s", d.Delivery.Status)
	}
	waitFor(t, 20*time.Second, "the redelivery delivered", func() bool {
		return adminGet[admin.Delivery](t, b, "/admin/api/deliveries/tenant-a/"+id).Delivery.Status == webhooks.DeliveryDelivered
	})
	waitFor(t, 20*time.Second, "the delivery out of the dead-letter queue", func() bool {
		return len(adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries").Data) == 2
	})

	for _, path := range []string{"/admin/api/deliveries/tenant-b/" + id, "/admin/api/deliveries/tenant-a/dlv_nope", "/admin/api/deliveries/x!/" + id} {
		resp, body = b.do(t, "GET", path, adminKey, "")
		wantProblem(t, resp, body, http.StatusNotFound, "not_found")
		resp, body = b.do(t, "POST", path+"/redeliver", adminKey, "")
		wantProblem(t, resp, body, http.StatusNotFound, "not_found")
	}
}

// TestAdminRetryingDeliveries: a delivery whose first attempt failed and
// which waits an hour for its next is listed as retrying, with the time of
// that attempt and the last error, by the API and on the failed deliveries
// page, and not as failed; Redeliver runs it at once.
func TestAdminRetryingDeliveries(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, func(c *app.Config) {
		c.Webhooks.Store.MaxAttempts = 5
		c.Webhooks.Deliverer.Schedule = []time.Duration{time.Hour}
	})
	b.start(t)
	rcv := newReceiver(t, http.StatusInternalServerError)
	b.createEndpoint(t, keyA, rcv.URL, "down")
	o := b.place(t, keyA, marketOrder())
	b.waitTerminal(t, keyA, o.ID)

	var list admin.DeliveryList
	waitFor(t, 30*time.Second, "the delivery retrying", func() bool {
		list = adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?status=retrying")
		return len(list.Data) == 1
	})
	d := list.Data[0]
	soon, late := time.Now().Add(50*time.Minute), time.Now().Add(70*time.Minute)
	if d.Tenant != "tenant-a" || d.NextAttemptAt == nil || d.NextAttemptAt.Before(soon) || d.NextAttemptAt.After(late) ||
		!strings.Contains(d.LastError, "retry in 1h: ") || !strings.Contains(d.LastError, "500") || d.FailedAt != nil || d.Delivery.AttemptCount != 1 {
		t.Errorf("retrying delivery: %+v (next attempt %v)", d, d.NextAttemptAt)
	}
	if failed := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries"); len(failed.Data) != 0 {
		t.Errorf("the retrying delivery is listed as failed: %+v", failed.Data)
	}
	if other := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?status=retrying&tenant=tenant-b"); len(other.Data) != 0 {
		t.Errorf("tenant-b has retrying deliveries: %+v", other.Data)
	}

	id := d.Delivery.ID
	html := page(t, b, "/admin/deliveries", http.StatusOK)
	row := regexp.MustCompile(`<tr data-delivery-id="` + id + `" data-state="retrying">.*<td class="next-attempt">([^<]*)</td><td class="last-error">([^<]*)</td>`).FindStringSubmatch(html)
	if row == nil {
		t.Fatalf("the failed deliveries page does not show %s retrying:\n%s", id, html)
	}
	if !strings.Contains(row[1], formatTS(*d.NextAttemptAt)) || !regexp.MustCompile(`\(in (59m[0-9]{1,2}s|1h([0-9]{1,2}s)?)\)`).MatchString(row[1]) || !strings.Contains(row[2], "500") {
		t.Errorf("retrying row: next attempt %q, last error %q", row[1], row[2])
	}
	wantIn(t, "the failed deliveries page", html, "No failed delivery.")
	html = page(t, b, "/admin/deliveries?status=failed", http.StatusOK)
	if strings.Contains(html, id) || strings.Contains(html, `id="retrying"`) {
		t.Errorf("the failed deliveries alone show the retrying one:\n%s", html)
	}

	rcv.status.Store(http.StatusOK)
	post(t, b, "/admin/deliveries/tenant-a/"+id+"/redeliver")
	waitFor(t, 20*time.Second, "the redelivery delivered", func() bool {
		return adminGet[admin.Delivery](t, b, "/admin/api/deliveries/tenant-a/"+id).Delivery.Status == webhooks.DeliveryDelivered
	})
	if left := adminGet[admin.DeliveryList](t, b, "/admin/api/deliveries?status=retrying"); len(left.Data) != 0 {
		t.Errorf("still retrying after delivery: %+v", left.Data)
	}
}

// formatTS is a time as the pages show it.
func formatTS(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") }
