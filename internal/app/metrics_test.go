package app_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// families is a parsed scrape.
type families map[string]*dto.MetricFamily

// scrape reads url's /metrics through client and parses it.
func scrape(t *testing.T, client *http.Client, url string) families {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("GET /metrics: %d %s", res.StatusCode, body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metric finds the sample of family name whose labels include labels
// ("k=v" pairs).
func (f families) metric(name string, labels ...string) (*dto.Metric, bool) {
	fam := f[name]
	if fam == nil {
		return nil, false
	}
	for _, m := range fam.Metric {
		have := make([]string, 0, len(m.Label))
		for _, l := range m.Label {
			have = append(have, l.GetName()+"="+l.GetValue())
		}
		ok := true
		for _, want := range labels {
			if !slices.Contains(have, want) {
				ok = false
				break
			}
		}
		if ok {
			return m, true
		}
	}
	return nil, false
}

// value is a counter's or gauge's value, a histogram's sample count; -1
// when the sample is absent.
func (f families) value(name string, labels ...string) float64 {
	m, ok := f.metric(name, labels...)
	switch {
	case !ok:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

// bucket is a histogram's cumulative count at upper bound le.
func (f families) bucket(name string, le float64, labels ...string) float64 {
	m, ok := f.metric(name, labels...)
	if !ok || m.Histogram == nil {
		return -1
	}
	for _, b := range m.Histogram.Bucket {
		if b.GetUpperBound() == le {
			return float64(b.GetCumulativeCount())
		}
	}
	return -1
}

// expect checks exact values: each key is "name{k=v,...}".
func (f families) expect(t *testing.T, want map[string]float64) {
	t.Helper()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		name, rest, _ := strings.Cut(k, "{")
		var labels []string
		if rest = strings.TrimSuffix(rest, "}"); rest != "" {
			labels = strings.Split(rest, ",")
		}
		if got := f.value(name, labels...); got != want[k] {
			t.Errorf("%s = %v, want %v", k, got, want[k])
		}
	}
}

// A known scenario on a whole app — 3 orders executed, 1 rejected for
// insufficient funds, a portfolio service failing a fifth of its requests,
// a slow execution service, one webhook endpoint that always fails — and
// the exact figures /metrics must show for it.
func TestMetricsOfAKnownScenario(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) { c.Webhooks.Store.MaxAttempts = 2 })
	a := b.api(t)
	b.sim.SetBalance("poor", 5)
	if err := b.sim.SetFaults(sim.Portfolio, sim.Faults{ErrorRate: 0.2}); err != nil {
		t.Fatal(err)
	}
	if err := b.sim.SetFaults(sim.Execution, sim.Faults{Latency: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	good, bad := newHookReceiver(t), newHookReceiver(t)
	bad.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	a.createEndpoint(apiKey, good.URL)
	badEP, _ := a.createEndpoint(apiKey, bad.URL, webhooks.EventOrderRejected)

	var ids []string
	for i := range 4 {
		acct := "acc-1"
		if i == 3 {
			acct = "poor"
		}
		var o orders.Order
		a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(func(m map[string]any) { m["account_id"] = acct }), &o)
		ids = append(ids, o.ID)
	}
	var statuses []string
	for _, id := range ids {
		statuses = append(statuses, string(b.waitTerminal(t, id, 30*time.Second).Status))
	}
	equal(t, "statuses", statuses, []string{"executed", "executed", "executed", "rejected"})
	for range 4 {
		good.next(t)
	}
	a.onlyDelivery(apiKey, badEP.ID, "the failing endpoint's delivery failed", func(d webhooks.Delivery) bool {
		return d.Status == webhooks.DeliveryFailed
	})
	unknown, _ := http.NewRequest("GET", "/no/such/route", nil)
	if res, err := a.c.Do(apitest.ExpectUnknownRoute(unknown)); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}

	// The last attempt is counted after it is recorded, and the failed
	// task is archived after that: wait for both.
	var f families
	pollUntil(t, 20*time.Second, "the webhook attempts and the archive in /metrics", func() bool {
		f = scrape(t, a.c, b.url)
		return f.value("asyncgate_webhook_attempts_total", "outcome=failed") == 1 &&
			f.value("asyncgate_webhook_attempts_total", "outcome=delivered") == 4 &&
			f.value("asyncgate_queue_archived_tasks", "queue=webhooks") == 1
	})

	st := b.sim.Stats()
	portfolioSent := f.value("asyncgate_downstream_attempts_total", "downstream=portfolio", "outcome=ok") +
		f.value("asyncgate_downstream_attempts_total", "downstream=portfolio", "outcome=refused") +
		f.value("asyncgate_downstream_attempts_total", "downstream=portfolio", "outcome=error")
	f.expect(t, map[string]float64{
		"asyncgate_orders_accepted_total":                                                 4,
		"asyncgate_orders_terminal_total{status=executed}":                                3,
		"asyncgate_orders_terminal_total{status=rejected}":                                1,
		"asyncgate_orders_terminal_total{status=failed}":                                  0,
		"asyncgate_orders_terminal_total{status=cancelled}":                               0,
		"asyncgate_http_requests_total{route=/v1/orders,method=POST,code=202}":            4,
		"asyncgate_http_request_duration_seconds{route=/v1/orders,method=POST}":           4,
		"asyncgate_http_requests_total{route=/v1/webhook-endpoints,method=POST,code=201}": 2,
		"asyncgate_http_requests_total{route=unmatched,method=GET,code=404}":              1,
		"asyncgate_saga_steps_total{step=validate,outcome=ok}":                            4,
		"asyncgate_saga_steps_total{step=reserve,outcome=ok}":                             3,
		"asyncgate_saga_steps_total{step=reserve,outcome=rejected}":                       1,
		"asyncgate_saga_steps_total{step=execute,outcome=ok}":                             3,
		"asyncgate_saga_steps_total{step=compensate,outcome=ok}":                          0,
		"asyncgate_saga_step_duration_seconds{step=execute}":                              3,
		"asyncgate_downstream_attempts_total{downstream=portfolio,outcome=refused}":       1, // the 409 for "poor"
		"asyncgate_downstream_attempts_total{downstream=portfolio,outcome=error}":         float64(st.Faulted),
		"asyncgate_downstream_attempts_total{downstream=execution,outcome=ok}":            3,
		"asyncgate_downstream_attempts_total{downstream=execution,outcome=error}":         0,
		"asyncgate_downstream_attempt_duration_seconds{downstream=execution}":             3,
		"asyncgate_downstream_attempt_duration_seconds{downstream=portfolio}":             portfolioSent,
		"asyncgate_downstream_breaker_state{downstream=portfolio}":                        0,
		"asyncgate_downstream_breaker_state{downstream=execution}":                        0,
		"asyncgate_webhook_attempts_total{outcome=delivered}":                             4,
		"asyncgate_webhook_attempts_total{outcome=retry}":                                 1,
		"asyncgate_webhook_attempts_total{outcome=failed}":                                1,
		"asyncgate_webhook_attempts_total{outcome=gone}":                                  0,
		"asyncgate_webhook_attempt_duration_seconds":                                      6,
		"asyncgate_webhook_oldest_undelivered_age_seconds":                                0,
		"asyncgate_queue_stats_up":                                                        1,
		"asyncgate_queue_archived_tasks{queue=webhooks}":                                  1,
		"asyncgate_queue_archived_tasks{queue=orders}":                                    0,
		"asyncgate_queue_archived_tasks{queue=critical}":                                  0,
		"asyncgate_queue_retry_tasks{queue=webhooks}":                                     0,
	})
	if want := float64(st.ReserveRequests + st.ReleaseRequests + st.PortfolioRequests); portfolioSent != want {
		t.Errorf("portfolio attempts sent (ok+refused+error) = %v, the simulator got %v", portfolioSent, want)
	}
	// The execution service answers after 20 ms: no attempt in the 10 ms bucket.
	if n := f.bucket("asyncgate_downstream_attempt_duration_seconds", 0.01, "downstream=execution"); n != 0 {
		t.Errorf("execution attempts within 10ms: %v, want 0 (the simulator delays them 20ms)", n)
	}
	for _, q := range []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks} {
		for _, name := range []string{"asyncgate_queue_size", "asyncgate_queue_latency_seconds", "asyncgate_queue_processed_total"} {
			if f.value(name, "queue="+q) < 0 {
				t.Errorf("%s{queue=%q} missing", name, q)
			}
		}
	}
	if f.value("asyncgate_queue_processed_total", "queue=orders") < 4 {
		t.Errorf("orders processed = %v, want at least 4", f.value("asyncgate_queue_processed_total", "queue=orders"))
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if f[name] == nil {
			t.Errorf("runtime metric %s missing", name)
		}
	}
	// No order id and no tenant in any label.
	for name, fam := range f {
		for _, m := range fam.Metric {
			for _, l := range m.Label {
				if slices.Contains(ids, l.GetValue()) || l.GetValue() == "acme" || l.GetName() == "tenant" {
					t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// A worker-only process serves its metrics on MetricsAddr: its queue
// figures and its breakers.
func TestMetricsListenerOfAWorker(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	cfg := fastConfig(rdb, "http://127.0.0.1:9") // never called
	cfg.API, cfg.MetricsAddr, cfg.Logger = false, "127.0.0.1:0", testLogger(t)
	w, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Shutdown(ctx)
	})
	if w.MetricsURL() == "" || w.URL() != "" {
		t.Fatalf("MetricsURL %q, URL %q: want a metrics listener and no API", w.MetricsURL(), w.URL())
	}
	c := apitest.Client(t, w.MetricsURL()) // the same operations as the API's
	f := scrape(t, c, w.MetricsURL())
	f.expect(t, map[string]float64{
		"asyncgate_queue_stats_up":                                 1,
		"asyncgate_queue_size{queue=orders}":                       0,
		"asyncgate_downstream_breaker_state{downstream=portfolio}": 0,
		"asyncgate_downstream_breaker_state{downstream=execution}": 0,
		"asyncgate_orders_accepted_total":                          0,
	})
	if f["asyncgate_http_requests_total"] != nil && len(f["asyncgate_http_requests_total"].Metric) > 0 {
		t.Errorf("a worker counts HTTP requests: %v", f["asyncgate_http_requests_total"])
	}
	req, _ := http.NewRequest("GET", "/healthz", nil)
	req.Header.Set("X-Request-Id", "scraper-1")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	equal(t, "healthz on the metrics port", res.StatusCode, http.StatusOK)
	equal(t, "its X-Request-Id", res.Header.Get("X-Request-Id"), "scraper-1")
}

// A delivery waiting for its retry makes the oldest undelivered event as
// old as the delivery.
func TestMetricsOldestUndeliveredWebhook(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) { c.Webhooks.Deliverer.Schedule = []time.Duration{time.Hour} })
	a := b.api(t)
	rcv := newHookReceiver(t)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	start := time.Now()
	b.place(t, order())
	d := a.onlyDelivery(apiKey, ep.ID, "first attempt failed", func(d webhooks.Delivery) bool { return d.AttemptCount == 1 })
	var f families
	pollUntil(t, 10*time.Second, "the delivery in the retry set", func() bool {
		f = scrape(t, a.c, b.url)
		return f.value("asyncgate_queue_retry_tasks", "queue=webhooks") == 1
	})
	// The figures are read at most once a second: the age is that of the
	// delivery up to a second ago.
	lower := time.Since(d.CreatedAt) - time.Second - 5*time.Millisecond
	age := f.value("asyncgate_webhook_oldest_undelivered_age_seconds")
	if age <= 0 || age < lower.Seconds() || age > time.Since(start).Seconds() {
		t.Fatalf("oldest undelivered age %vs, want more than 0, between %vs and %vs", age, lower.Seconds(), time.Since(start).Seconds())
	}
	// And it grows, though the retry set is read only every 15 s.
	pollUntil(t, 10*time.Second, "the age to grow by a second", func() bool {
		return scrape(t, a.c, b.url).value("asyncgate_webhook_oldest_undelivered_age_seconds") >= age+1
	})
	f.expect(t, map[string]float64{
		"asyncgate_webhook_attempts_total{outcome=retry}": 1,
		"asyncgate_queue_retry_tasks{queue=webhooks}":     1,
	})
}

// The compose file runs the API and a worker whose metrics Prometheus
// scrapes where they are served, with traces sent to Jaeger; `docker
// compose config` (or docker-compose) validates it where docker is.
func TestComposeFileServesMetricsWherePrometheusScrapes(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	data, err = os.ReadFile(filepath.Join(root, "deploy", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &prom); err != nil {
		t.Fatalf("deploy/prometheus.yml: %v", err)
	}
	targets := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				targets[tg] = sc.MetricsPath == "/metrics"
			}
		}
	}
	// Where each asyncgate service serves /metrics.
	want := map[string]string{"api": "api:8080", "worker": "worker" + compose.Services["worker"].Environment["ASYNCGATE_METRICS_ADDR"]}
	for svc, target := range want {
		s, ok := compose.Services[svc]
		if !ok {
			t.Fatalf("no service %s", svc)
		}
		if len(s.Command) == 0 || s.Command[0] != svc {
			t.Errorf("service %s runs %v, want asyncgate %s", svc, s.Command, svc)
		}
		if !targets[target] {
			t.Errorf("Prometheus does not scrape %s/metrics (targets %v)", target, targets)
		}
		if s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://jaeger:4318" || s.Environment["OTEL_SERVICE_NAME"] != "asyncgate-"+svc {
			t.Errorf("service %s: OTEL environment %v", svc, s.Environment)
		}
		if s.Environment["ASYNCGATE_REDIS"] != "redis://redis:6379/0" {
			t.Errorf("service %s: ASYNCGATE_REDIS %q", svc, s.Environment["ASYNCGATE_REDIS"])
		}
	}
	for _, svc := range []string{"redis", "jaeger", "prometheus", "sim"} {
		if _, ok := compose.Services[svc]; !ok {
			t.Errorf("no service %s", svc)
		}
	}
	if !slices.Contains(compose.Services["redis"].Command, "--appendonly") {
		t.Errorf("redis runs %v, want --appendonly yes", compose.Services["redis"].Command)
	}

	var cmd *exec.Cmd
	switch {
	case exec.Command("docker", "compose", "version").Run() == nil:
		cmd = exec.Command("docker", "compose", "-f", "docker-compose.yml", "config", "-q")
	default:
		if _, err := exec.LookPath("docker-compose"); err != nil {
			t.Skip("neither docker compose nor docker-compose: the file was checked without them")
		}
		cmd = exec.Command("docker-compose", "-f", "docker-compose.yml", "config", "-q")
	}
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
}
