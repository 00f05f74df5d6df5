package telemetry

import (
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/asyncgate/asyncgate/orders"
)

// Namespace prefixes every asyncgate metric.
const Namespace = "asyncgate"

// UnmatchedRoute is the route label of requests that matched no route, so
// that scanners probing random paths cannot grow the series.
const UnmatchedRoute = "unmatched"

// Label values the packages report. They are listed here so that their
// series are created up front (a counter at 0 is visible before the first
// event) and resolved once: an observation is then a map lookup and an
// atomic add, with no allocation.
var (
	// SagaSteps are the steps of an order's saga.
	SagaSteps = []string{"validate", "reserve", "execute", "compensate", "release"}
	// SagaOutcomes are the outcomes of a step.
	SagaOutcomes = []string{"ok", "rejected", "compensate", "postponed", "retry", "failed", "fenced"}
	// Downstreams are the services asyncgate calls.
	Downstreams = []string{"portfolio", "execution"}
	// DownstreamOutcomes are the outcomes of one attempt to call a downstream.
	DownstreamOutcomes = []string{"ok", "refused", "error", "breaker_open", "bulkhead_full", "cancelled"}
	// WebhookOutcomes are the outcomes of one delivery attempt.
	WebhookOutcomes = []string{"delivered", "retry", "failed", "gone"}
	// TerminalStatuses are the statuses an order ends in.
	TerminalStatuses = []orders.Status{orders.Executed, orders.Rejected, orders.Failed, orders.Cancelled}
)

// Buckets of the latency histograms, in seconds.
var (
	httpBuckets       = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	downstreamBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	sagaBuckets       = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	webhookBuckets    = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30}
)

// Metrics holds the Prometheus metrics of one asyncgate process, in a
// registry of its own (not the global default one), so that two Apps in one
// test binary do not share counters. It implements the small observer
// interfaces of server, jobs, downstream and webhooks, which do not import
// Prometheus themselves. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	// httpSeries maps the label values seen so far to their series: read
	// with one atomic load, copied on write (a new route, method or code).
	httpSeries atomic.Pointer[map[httpKey]httpSeries]
	httpMu     sync.Mutex // serializes writers

	accepted     prometheus.Counter
	terminal     *prometheus.CounterVec
	terminalByID map[orders.Status]prometheus.Counter

	saga outcomeMetrics // by step
	down outcomeMetrics // by downstream

	webhookAttempts *prometheus.CounterVec
	webhookDuration prometheus.Histogram
	webhookCount    map[string]prometheus.Counter
}

type httpKey struct {
	route, method string
	code          int
}

type httpSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// outcomeMetrics counts events by subject (a saga step, a downstream) and
// outcome, and times them by subject. The series of the known label values
// are resolved up front; others are resolved when they occur.
type outcomeMetrics struct {
	count    *prometheus.CounterVec   // labels: subject, "outcome"
	duration *prometheus.HistogramVec // label: subject
	counters map[[2]string]prometheus.Counter
	timers   map[string]prometheus.Observer
}

func newOutcomeMetrics(subject string, subjects, outcomes []string, count prometheus.CounterOpts, duration prometheus.HistogramOpts) outcomeMetrics {
	om := outcomeMetrics{
		count:    prometheus.NewCounterVec(count, []string{subject, "outcome"}),
		duration: prometheus.NewHistogramVec(duration, []string{subject}),
		counters: make(map[[2]string]prometheus.Counter, len(subjects)*len(outcomes)),
		timers:   make(map[string]prometheus.Observer, len(subjects)),
	}
	for _, s := range subjects {
		om.timers[s] = om.duration.WithLabelValues(s)
		for _, o := range outcomes {
			om.counters[[2]string{s, o}] = om.count.WithLabelValues(s, o)
		}
	}
	return om
}

// inc counts one event of subject with outcome.
func (om *outcomeMetrics) inc(subject, outcome string) {
	c, ok := om.counters[[2]string{subject, outcome}]
	if !ok {
		c = om.count.WithLabelValues(subject, outcome)
	}
	c.Inc()
}

// observe records the duration of one event of subject.
func (om *outcomeMetrics) observe(subject string, elapsed time.Duration) {
	o, ok := om.timers[subject]
	if !ok {
		o = om.duration.WithLabelValues(subject)
	}
	o.Observe(elapsed.Seconds())
}

// NewMetrics returns the metrics of a process, registered in a new
// registry with the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests answered, by route template (\"unmatched\" when none matched), method and status code.",
	}, []string{"route", "method", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
		Help: "Time from receiving an HTTP request to the end of its answer, by route template and method.", Buckets: httpBuckets,
	}, []string{"route", "method"})
	m.httpSeries.Store(&map[httpKey]httpSeries{})

	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "orders", Name: "accepted_total",
		Help: "Orders accepted (answered 202 and stored); replays of an idempotent request are not counted again.",
	})
	m.terminal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "orders", Name: "terminal_total",
		Help: "Orders that reached a terminal status in this process, by status.",
	}, []string{"status"})
	m.terminalByID = make(map[orders.Status]prometheus.Counter, len(TerminalStatuses))
	for _, s := range TerminalStatuses {
		m.terminalByID[s] = m.terminal.WithLabelValues(string(s))
	}

	m.saga = newOutcomeMetrics("step", SagaSteps, SagaOutcomes, prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "saga", Name: "steps_total",
		Help: "Saga steps run, by step and outcome: ok, rejected (business refusal), compensate (rollback requested), postponed (open breaker, full bulkhead, held lease), retry (transient failure), failed (permanent), fenced (another worker took over).",
	}, prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "saga", Name: "step_duration_seconds",
		Help: "Time a saga step took, downstream calls and store writes included, whatever its outcome.", Buckets: sagaBuckets,
	})
	m.down = newOutcomeMetrics("downstream", Downstreams, DownstreamOutcomes, prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "downstream", Name: "attempts_total",
		Help: "HTTP attempts to call a downstream, by downstream and outcome: ok, refused (a business or client-error answer), error (timeout, connection error, 5xx, 429, bad answer), breaker_open and bulkhead_full (not sent), cancelled (the caller gave up).",
	}, prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "downstream", Name: "attempt_duration_seconds",
		Help: "Duration of the attempts sent to a downstream (ok, refused and error outcomes).", Buckets: downstreamBuckets,
	})

	m.webhookAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "webhook", Name: "attempts_total",
		Help: "Webhook delivery attempts, by outcome: delivered (2xx), retry (failed, another attempt is scheduled), failed (the last attempt failed: archived), gone (410: the endpoint is disabled).",
	}, []string{"outcome"})
	m.webhookDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "webhook", Name: "attempt_duration_seconds",
		Help: "Duration of webhook delivery attempts, from sending the request to the end of the answer.", Buckets: webhookBuckets,
	})
	m.webhookCount = make(map[string]prometheus.Counter, len(WebhookOutcomes))
	for _, o := range WebhookOutcomes {
		m.webhookCount[o] = m.webhookAttempts.WithLabelValues(o)
	}

	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.accepted, m.terminal, m.saga.count, m.saga.duration,
		m.down.count, m.down.duration, m.webhookAttempts, m.webhookDuration)
	return m
}

// Registry is where the metrics are registered; register more collectors
// (such as the queue collector) on it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics, when asked). A collector that fails leaves its metrics out
// of the answer rather than failing the scrape.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// httpMethods bounds the method label: anything else is "other".
var httpMethods = map[string]string{
	http.MethodGet: http.MethodGet, http.MethodHead: http.MethodHead, http.MethodPost: http.MethodPost,
	http.MethodPut: http.MethodPut, http.MethodPatch: http.MethodPatch, http.MethodDelete: http.MethodDelete,
	http.MethodOptions: http.MethodOptions,
}

// ObserveHTTPRequest records one answered request. route is the matched
// route template (such as "/v1/orders/:id"), "" when none matched.
func (m *Metrics) ObserveHTTPRequest(route, method string, status int, elapsed time.Duration) {
	if route == "" {
		route = UnmatchedRoute
	}
	if mm, ok := httpMethods[method]; ok {
		method = mm
	} else {
		method = "other"
	}
	k := httpKey{route, method, status}
	s, ok := (*m.httpSeries.Load())[k]
	if !ok {
		s = m.newHTTPSeries(k)
	}
	s.count.Inc()
	s.duration.Observe(elapsed.Seconds())
}

// newHTTPSeries resolves the series of k and adds them to the map. Route
// templates and methods are bounded; so are the status codes a handler
// writes (net/http refuses codes outside 100-999).
func (m *Metrics) newHTTPSeries(k httpKey) httpSeries {
	m.httpMu.Lock()
	defer m.httpMu.Unlock()
	old := *m.httpSeries.Load()
	if s, ok := old[k]; ok {
		return s
	}
	s := httpSeries{
		count:    m.httpRequests.WithLabelValues(k.route, k.method, strconv.Itoa(k.code)),
		duration: m.httpDuration.WithLabelValues(k.route, k.method),
	}
	next := make(map[httpKey]httpSeries, len(old)+1)
	maps.Copy(next, old)
	next[k] = s
	m.httpSeries.Store(&next)
	return s
}

// OrderAccepted records an order answered 202.
func (m *Metrics) OrderAccepted() { m.accepted.Inc() }

// OrderEnded records an order that reached a terminal status.
func (m *Metrics) OrderEnded(status orders.Status) {
	c, ok := m.terminalByID[status]
	if !ok {
		c = m.terminal.WithLabelValues(string(status))
	}
	c.Inc()
}

// ObserveSagaStep records one run of a saga step.
func (m *Metrics) ObserveSagaStep(step, outcome string, elapsed time.Duration) {
	m.saga.inc(step, outcome)
	m.saga.observe(step, elapsed)
}

// ObserveDownstreamAttempt records one attempt to call a downstream.
// elapsed is ignored for attempts that were not sent.
func (m *Metrics) ObserveDownstreamAttempt(downstream, outcome string, elapsed time.Duration) {
	m.down.inc(downstream, outcome)
	switch outcome {
	case "ok", "refused", "error":
		m.down.observe(downstream, elapsed)
	}
}

// ObserveWebhookAttempt records one webhook delivery attempt.
func (m *Metrics) ObserveWebhookAttempt(outcome string, elapsed time.Duration) {
	c, ok := m.webhookCount[outcome]
	if !ok {
		c = m.webhookAttempts.WithLabelValues(outcome)
	}
	c.Inc()
	m.webhookDuration.Observe(elapsed.Seconds())
}
