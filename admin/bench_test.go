package admin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// BenchmarkAdminOrdersNewestPage measures the dashboard's orders list over
// 10,000 orders of 5 tenants stored in a real Redis: the newest page (50
// orders), across tenants and of one tenant, from the admin API and as the
// HTML page. The time is the server's (ServeHTTP, no network), reported
// as ms/op too; the target is under 100 ms. A page reads at most 51 ids per
// tenant and 50 orders, whatever the number of orders. api/stats counts
// the orders of the last hour by status (one ZLEXCOUNT per tenant and
// status).
func BenchmarkAdminOrdersNewestPage(b *testing.B) {
	const total, tenants = 10000, 5
	rdb := redistest.Shared(b).NewClient(b)
	store := orders.NewStore(rdb, orders.StoreConfig{})
	storeOrders(b, store, total, tenants)
	dash, err := admin.New(admin.Config{Logger: slog.New(slog.DiscardHandler)}, admin.Deps{Orders: store})
	if err != nil {
		b.Fatal(err)
	}
	api, err := server.New(server.Config{APIKeys: apiKeys, AdminKeys: map[string]string{adminKey: "ops"}, Logger: slog.New(slog.DiscardHandler)},
		server.Deps{Orders: store, Queue: nopQueue{}, Redis: okPinger{}, Dashboard: dash})
	if err != nil {
		b.Fatal(err)
	}
	v, err := apitest.Default()
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, path, row string
		rows            int
	}{
		{"api/all-tenants", "/admin/api/orders", `"tenant":`, 50},
		{"api/one-tenant", "/admin/api/orders?tenant=t0", `"tenant":"t0"`, 50},
		{"page/all-tenants", "/admin/orders", `<tr data-order-id=`, 50},
		// The headline figures count the last hour's orders by status.
		{"api/stats", "/admin/api/stats", `"pending":10000`, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			get := func() *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodGet, bc.path, nil)
				req.Header.Set("Authorization", "Bearer "+adminKey)
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				return rec
			}
			// The answer is the newest page, as openapi.yaml says.
			rec := get()
			body, _ := io.ReadAll(rec.Result().Body)
			req := httptest.NewRequest(http.MethodGet, bc.path, nil)
			if err := v.ValidateResponse(req, rec.Code, rec.Header(), body); err != nil {
				b.Fatalf("GET %s: %v", bc.path, err)
			}
			if rec.Code != http.StatusOK || strings.Count(string(body), bc.row) != bc.rows {
				b.Fatalf("GET %s: %d with %d × %s, want 200 with %d", bc.path, rec.Code, strings.Count(string(body), bc.row), bc.row, bc.rows)
			}
			b.ReportAllocs()
			for b.Loop() {
				if rec := get(); rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d", bc.path, rec.Code)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/op")
		})
	}
}

// storeOrders stores n pending orders spread over tenants t0, t1, …, with
// 16 writers.
func storeOrders(b *testing.B, store *orders.Store, n, tenants int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				now := time.Now().UTC()
				o := &orders.Order{
					ID: uuid.Must(uuid.NewV7()).String(), Tenant: fmt.Sprintf("t%d", i%tenants), Request: marketOrder(),
					CreatedAt: now, Deadline: now.Add(time.Hour),
				}
				if _, err := store.Create(ctx, o); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.Logf("stored %d orders in %s", n, time.Since(start).Round(time.Millisecond))
}
