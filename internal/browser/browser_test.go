package browser_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

const (
	apiKey   = "browser-test-key-0123456789"
	adminKey = "browser-admin-key-0123456789"
)

// chromium returns the Chromium to drive, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Skip("no Chromium found (chromium, chromium-browser, google-chrome): `make deps` installs it")
	return ""
}

// shots is where the screenshots go: $ASYNCGATE_SCREENSHOTS, or a new
// temporary folder that outlives the test.
func shots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ASYNCGATE_SCREENSHOTS")
	if dir == "" {
		d, err := os.MkdirTemp("", "asyncgate-screenshots-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// receiver is a webhook receiver that answers status.
type receiver struct {
	*httptest.Server
	status atomic.Int64
	hits   atomic.Int64
}

// env is a whole asyncgate (API, worker, webhooks) with the simulator.
type env struct {
	url string
	api *http.Client
	rcv *receiver
	sim *sim.Sim
}

func setup(t *testing.T) *env {
	t.Helper()
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	rcv := &receiver{}
	rcv.status.Store(http.StatusInternalServerError)
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rcv.hits.Add(1)
		w.WriteHeader(int(rcv.status.Load()))
	}))
	t.Cleanup(rcv.Close)

	down := downstream.Config{BaseURL: simSrv.URL, Timeout: 500 * time.Millisecond, Budget: 2 * time.Second,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("AG_TEST_LOG") == "1" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	_, apiURL := apptest.Serve(t, app.Config{
		Redis: redistest.Shared(t).NewClient(t), API: true, Worker: true,
		Server: server.Config{
			APIKeys:   map[string]string{apiKey: "acme"},
			AdminKeys: map[string]string{adminKey: "ops"},
		},
		Admin:      admin.Config{InsecureCookies: true}, // plain http, as under asyncgate dev
		Portfolio:  down,
		Execution:  down,
		Saga:       jobs.SagaConfig{LeaseTTL: 5 * time.Second, RetryBase: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond},
		Reconciler: jobs.ReconcilerConfig{Interval: time.Hour},
		Webhooks: app.WebhooksConfig{
			Guard:     webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true},
			Store:     webhooks.StoreConfig{MaxAttempts: 2},
			Deliverer: webhooks.DelivererConfig{Schedule: []time.Duration{10 * time.Millisecond}, Jitter: -1, Timeout: 5 * time.Second},
		},
		Logger: logger,
	})
	return &env{url: apiURL, api: apitest.Client(t, apiURL), rcv: rcv, sim: s}
}

// call sends an API request with the tenant key, checks the status and
// decodes the answer into out (when not nil).
func (e *env) call(t *testing.T, method, path string, body any, status int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, path, rd)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.api.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

// failedDelivery makes a webhook delivery that ends failed and archived:
// an order is cancelled (its compensation runs on the critical queue), and
// the receiver answers 500 to both attempts of its order.cancelled event.
func (e *env) failedDelivery(t *testing.T) (orderID string, d webhooks.Delivery) {
	t.Helper()
	// A busy receiver asks for an hour's wait: its delivery is retrying.
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(busy.Close)
	e.call(t, "POST", "/v1/webhook-endpoints", map[string]any{"url": busy.URL + "/busy",
		"events": []string{"order.cancelled"}, "description": "busy receiver"}, http.StatusCreated, nil)
	var ep webhooks.Endpoint
	e.call(t, "POST", "/v1/webhook-endpoints", map[string]any{"url": e.rcv.URL + "/hooks",
		"events": []string{"order.executed", "order.cancelled", "order.failed", "order.rejected"}, "description": "browser test"},
		http.StatusCreated, &ep)
	// A slow portfolio keeps the order cancellable.
	if err := e.sim.SetFaults(sim.Portfolio, sim.Faults{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	var o orders.Order
	e.call(t, "POST", "/v1/orders", map[string]any{"account_id": "acc-1", "symbol": "AAPL", "side": "buy", "quantity": 10, "type": "market"},
		http.StatusAccepted, &o)
	e.call(t, "POST", "/v1/orders/"+o.ID+"/cancel", nil, http.StatusAccepted, nil)
	e.sim.ClearFaults()

	deadline := time.Now().Add(30 * time.Second)
	for {
		var list struct{ Data []webhooks.Delivery }
		e.call(t, "GET", "/v1/webhook-endpoints/"+ep.ID+"/deliveries", nil, http.StatusOK, &list)
		if len(list.Data) == 1 && list.Data[0].Status == webhooks.DeliveryFailed {
			return o.ID, list.Data[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed delivery within 30s: %+v", list.Data)
		}
		time.Sleep(50 * time.Millisecond) // polling the API
	}
}

// browser starts a headless Chromium; the network outside 127.0.0.1 is
// closed (asynqmon's page asks for Google's fonts), so every other host
// fails at once.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitText waits until the page's text has every one of want.
func waitText(t *testing.T, ctx context.Context, what string, within time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		text := get(t, ctx, what, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q on the page within %s; it shows:\n%s", what, missing, within, text)
		}
		do(t, ctx, what, chromedp.Sleep(100*time.Millisecond)) // polling the page
	}
}

func TestDashboardInABrowser(t *testing.T) {
	t.Parallel()
	path := chromium(t)
	e := setup(t)
	orderID, failed := e.failedDelivery(t)
	dir := shots(t)
	ctx := browser(t)
	t.Logf("driving %s", path)
	// Every request of every page stays on this site: asynqmon's page
	// asked Google for fonts.
	var mu sync.Mutex
	var offsite []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if r, ok := ev.(*network.EventRequestWillBeSent); ok && !strings.HasPrefix(r.Request.URL, e.url+"/") && !strings.HasPrefix(r.Request.URL, "data:") {
			mu.Lock()
			offsite = append(offsite, r.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(offsite) > 0 {
			t.Errorf("the pages requested other sites: %q", offsite)
		}
	})

	// Not logged in: to the login page, which comes back.
	do(t, ctx, "open the dashboard", chromedp.Navigate(e.url+"/admin/"), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if loc := get(t, ctx, "location", chromedp.Location()); loc != e.url+"/admin/login?next=%2Fadmin%2F" {
		t.Fatalf("at %s, want the login page", loc)
	}
	screenshot(t, ctx, dir, "1-login")

	// A wrong key: the form again, with an error.
	do(t, ctx, "log in with a wrong key",
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="key"]`), "not-the-admin-key-0123456789"),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	)
	do(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="key"]`), adminKey),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/admin/logout"]`)),
	)
	if loc := get(t, ctx, "location", chromedp.Location()); loc != e.url+"/admin/" {
		t.Fatalf("after login at %s, want %s/admin/", loc, e.url)
	}
	screenshot(t, ctx, dir, "2-overview")

	// The queues: asynqmon's page, behind the same login.
	do(t, ctx, "open the queues", chromedp.Navigate(e.url+"/admin/queues"))
	waitText(t, ctx, "the queues page", 30*time.Second, jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks)
	screenshot(t, ctx, dir, "3-queues")
	do(t, ctx, "back to the dashboard from the queues",
		chromedp.Click(chromedp.CSS("#asyncgate-back")), chromedp.WaitVisible(chromedp.CSS(`form[action="/admin/logout"]`)))
	if loc := get(t, ctx, "location", chromedp.Location()); loc != e.url+"/admin/" {
		t.Fatalf("the queues' link back led to %s, want %s/admin/", loc, e.url)
	}
	do(t, ctx, "open the queues again", chromedp.Navigate(e.url+"/admin/queues"))
	waitText(t, ctx, "the queues page", 30*time.Second, jobs.QueueCritical)
	// asynqmon's changes need the CSRF token: its HTTP client (axios) sends
	// the XSRF-TOKEN cookie back as X-XSRF-TOKEN; a request without fails.
	// The queue is the shard the order's task went to (the queues are
	// sharded; a shard that never had a task is unknown to Asynq: 500).
	change := `fetch("/admin/queues/api/queues/` + jobs.QueueFor(jobs.QueueOrders, orderID, jobs.DefaultQueueShards) +
		`/archived_tasks:run_all", {method: "POST", headers: %s}).then(r => r.status)`
	if st := get(t, ctx, "a queue change without the token", chromedp.Evaluate[int](fmt.Sprintf(change, `{}`), chromedp.EvalAwaitPromise)); st != http.StatusForbidden {
		t.Fatalf("a queue change without the CSRF token answered %d, want 403", st)
	}
	withToken := fmt.Sprintf(change, `{"X-XSRF-TOKEN": decodeURIComponent(document.cookie.match(/(?:^|; )XSRF-TOKEN=([^;]*)/)[1])}`)
	if st := get(t, ctx, "a queue change with the token", chromedp.Evaluate[int](withToken, chromedp.EvalAwaitPromise)); st != http.StatusOK {
		t.Fatalf("a queue change with the XSRF-TOKEN cookie's token answered %d, want 200", st)
	}

	do(t, ctx, "open the orders", chromedp.Navigate(e.url+"/admin/orders"), chromedp.WaitVisible(chromedp.CSS("table")))
	waitText(t, ctx, "the orders page", 5*time.Second, orderID)
	screenshot(t, ctx, dir, "4-orders")
	do(t, ctx, "open the order", chromedp.Navigate(e.url+"/admin/orders/acme/"+orderID), chromedp.WaitVisible(chromedp.CSS("#order-status")))
	screenshot(t, ctx, dir, "4-order")
	do(t, ctx, "open the endpoints", chromedp.Navigate(e.url+"/admin/endpoints"), chromedp.WaitVisible(chromedp.CSS("tr[data-endpoint-id]")))
	screenshot(t, ctx, dir, "4-endpoints")

	// The failed delivery, redelivered once the receiver is back.
	row := fmt.Sprintf(`tr[data-delivery-id=%q]`, failed.ID)
	do(t, ctx, "open the deliveries", chromedp.Navigate(e.url+"/admin/deliveries"), chromedp.WaitVisible(chromedp.CSS(row)))
	// The busy receiver's delivery waits an hour to retry.
	retrying := time.Now().Add(30 * time.Second)
	for !get(t, ctx, "a retrying row", chromedp.Evaluate[bool](`document.querySelector('tr[data-state="retrying"]') !== null`)) {
		if time.Now().After(retrying) {
			t.Fatal("no retrying delivery on the page within 30s")
		}
		do(t, ctx, "reload the deliveries", chromedp.Sleep(200*time.Millisecond), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(row)))
	}
	waitText(t, ctx, "the retrying delivery", 5*time.Second, "(in 59m", "retry in 1h: ", "Retry-After 1h honoured")
	screenshot(t, ctx, dir, "5-deliveries")
	e.rcv.status.Store(http.StatusOK)
	before := e.rcv.hits.Load()
	do(t, ctx, "redeliver",
		chromedp.Click(chromedp.CSS(row+` button.redeliver`)),
		chromedp.WaitVisible(chromedp.CSS("#delivery-status")),
	)
	detail := e.url + "/admin/deliveries/acme/" + url.PathEscape(failed.ID)
	if loc := get(t, ctx, "location", chromedp.Location()); loc != detail {
		t.Fatalf("after redeliver at %s, want %s", loc, detail)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := get(t, ctx, "the delivery's status", chromedp.AttributeValue(chromedp.CSS("#delivery-status"), "data-status"))
		if st.Value == webhooks.DeliveryDelivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the delivery is still %q after 30s", st.Value)
		}
		do(t, ctx, "reload", chromedp.Sleep(200*time.Millisecond), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#delivery-status")))
	}
	if got := e.rcv.hits.Load() - before; got != 1 {
		t.Fatalf("the receiver got %d requests after the redeliver, want 1", got)
	}
	screenshot(t, ctx, dir, "6-delivery")

	// Logging out ends the browser's session.
	do(t, ctx, "log out",
		chromedp.Click(chromedp.CSS(`form[action="/admin/logout"] button`)),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.Navigate(e.url+"/admin/orders"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	)
}
