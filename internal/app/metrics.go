package app

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// The observer interfaces of the packages, all implemented by telemetry.Metrics.
var (
	_ server.Metrics     = (*telemetry.Metrics)(nil)
	_ jobs.Metrics       = (*telemetry.Metrics)(nil)
	_ downstream.Metrics = (*telemetry.Metrics)(nil)
	_ webhooks.Metrics   = (*telemetry.Metrics)(nil)
)

// metricQueues are the queues whose figures every scrape reports, even
// before their first task: one series per kind, the sum of its shards
// (decision 75; per-shard series would multiply them by --queue-shards).
var metricQueues = []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks}

// Metrics returns the process's metrics (served at /metrics).
func (a *App) Metrics() *telemetry.Metrics { return a.metrics }

// MetricsHandler serves the process's metrics in the Prometheus format.
func (a *App) MetricsHandler() http.Handler { return a.metrics.Handler() }

// wireMetrics points the downstream clients at the metrics and registers
// the collectors that read at scrape time: the Asynq queues and the
// downstream breakers.
func (a *App) wireMetrics() {
	m := a.metrics
	for _, c := range []interface{ SetMetrics(downstream.Metrics) }{a.Portfolio, a.Execution, a.reader} {
		if c != nil && !isNilClient(c) {
			c.SetMetrics(m)
		}
	}
	reg := m.Registry()
	for _, c := range []prometheus.Collector{
		newQueueCollector(a.Inspector(), metricQueues, a.cfg.Logger),
		&breakerCollector{a: a, desc: prometheus.NewDesc(
			prometheus.BuildFQName(telemetry.Namespace, "downstream", "breaker_state"),
			"State of the downstream's circuit breaker in this process: 0 closed, 1 half-open, 2 open (the worst of the process's breakers of that downstream).",
			[]string{"downstream"}, nil)},
	} {
		if err := reg.Register(c); err != nil {
			// Config.Metrics shared by two Apps: the first one's collectors report.
			a.cfg.Logger.Debug("metrics: collector not registered", "err", err)
		}
	}
}

// listenURL is the http:// base URL of a listening address.
func listenURL(addr *net.TCPAddr) string {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// isNilClient reports whether c is a typed nil pointer (a client this
// process does not have).
func isNilClient(c any) bool {
	switch v := c.(type) {
	case *downstream.Portfolio:
		return v == nil
	case *downstream.Execution:
		return v == nil
	case *downstream.Reader:
		return v == nil
	}
	return false
}

// startMetricsListener serves /metrics on MetricsAddr, for processes
// without the API (whose router serves /metrics itself) or that want the
// metrics apart from the public port.
func (a *App) startMetricsListener() error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := a.cfg.Listen.Listen(a.cfg.MetricsAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	a.metricsLn = ln
	a.metricsSrv = a.cfg.Listen.Server(withRequestID(mux))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.cfg.Logger.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// withRequestID answers with an X-Request-Id as the API does (the caller's,
// or a new one), so that these operations match openapi.yaml on either port.
func withRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 128 {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		h.ServeHTTP(w, r)
	})
}

// MetricsURL is the metrics listener's base URL once listening ("" without
// MetricsAddr).
func (a *App) MetricsURL() string {
	if a.metricsLn == nil {
		return ""
	}
	return listenURL(a.metricsLn.Addr().(*net.TCPAddr))
}

// breakerCollector reports the state of this process's downstream
// breakers at scrape time: reading a breaker is a mutex and a clock read,
// and it catches changes no hook reports (an open breaker's time running out).
type breakerCollector struct {
	a    *App
	desc *prometheus.Desc
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	worst := make(map[string]int, 2)
	for _, st := range c.a.breakerStatuses() {
		worst[st.Downstream] = max(worst[st.Downstream], severity(st.State))
	}
	for name, v := range worst {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), name)
	}
}

// queueCollector reports the Asynq queues' figures, read at scrape time
// through the Inspector (one GetQueueInfo per queue), at most once per
// queueCacheTTL whatever the number of scrapers, and waiting at most
// queueTimeout for Redis: a slow Redis leaves the figures out of that
// scrape (asyncgate_queue_stats_up 0), it never holds the scrape.
//
// The age of the oldest undelivered webhook event is the largest of two
// ages, both from Asynq (the record of what is still to be delivered):
//   - the webhooks queue's latency: how long the oldest pending task
//     (a fan-out or a delivery, due now) has been waiting;
//   - the age of the oldest delivery waiting for a retry (or postponed by
//     an open endpoint breaker): delivery ids are "dlv_" + a UUIDv7, so the
//     ids of the retry set give their creation times without reading the
//     deliveries. That walk reads up to oldestScanLimit task ids, so it is
//     made at most once per oldestTTL; past the limit the figure is a
//     lower bound.
//
// Deliveries that failed for good are not counted: they sit in the archive
// (asyncgate_queue_archived_tasks{queue="webhooks"}). The webhook store is
// not used: finding the oldest undelivered delivery there would mean
// walking every tenant's endpoints.
type queueCollector struct {
	insp   *asynq.Inspector
	queues []string
	log    *slog.Logger

	size, latency, archived, retry, processed, failed, up, oldest *prometheus.Desc

	mu       sync.Mutex
	snap     *queueSnapshot
	inflight chan struct{}
	oldestAt time.Time // when the retry set was last read
	oldestT  time.Time // the oldest delivery it held; zero: none
}

const (
	queueCacheTTL   = time.Second
	queueTimeout    = 2 * time.Second
	oldestTTL       = 15 * time.Second
	oldestScanLimit = 10000
	oldestPageSize  = 500
)

type queueSnapshot struct {
	at     time.Time
	infos  map[string]*asynq.QueueInfo // nil entry: the queue does not exist yet
	ok     bool
	oldest float64 // seconds
}

func newQueueCollector(insp *asynq.Inspector, queues []string, log *slog.Logger) *queueCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(telemetry.Namespace, "queue", name), help, labels, nil)
	}
	return &queueCollector{
		insp: insp, queues: queues, log: log,
		size:      d("size", "Tasks in the Asynq queue: pending, active, scheduled, retry and archived.", "queue"),
		latency:   d("latency_seconds", "How long the oldest pending task of the queue has waited.", "queue"),
		archived:  d("archived_tasks", "Tasks in the queue's archive (the dead-letter queue).", "queue"),
		retry:     d("retry_tasks", "Tasks of the queue waiting for a retry (or postponed).", "queue"),
		processed: d("processed_total", "Tasks of the queue processed, by any worker, since the queue exists.", "queue"),
		failed:    d("failed_total", "Task attempts of the queue that failed, by any worker, since the queue exists.", "queue"),
		up:        d("stats_up", "1 when the queue figures of this scrape were read from Redis, 0 when Redis did not answer in time."),
		oldest: prometheus.NewDesc(prometheus.BuildFQName(telemetry.Namespace, "webhook", "oldest_undelivered_age_seconds"),
			"Age of the oldest webhook event not yet delivered (pending or waiting for a retry; failed ones are archived), 0 when none.", nil, nil),
	}
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{q.size, q.latency, q.archived, q.retry, q.processed, q.failed, q.up, q.oldest} {
		ch <- d
	}
}

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	s := q.snapshot()
	if s == nil || !s.ok {
		ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 1)
	gauge := func(d *prometheus.Desc, v float64, queue string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, queue)
	}
	for _, name := range q.queues {
		info := s.infos[name]
		if info == nil {
			info = &asynq.QueueInfo{}
		}
		gauge(q.size, float64(info.Size), name)
		gauge(q.latency, info.Latency.Seconds(), name)
		gauge(q.archived, float64(info.Archived), name)
		gauge(q.retry, float64(info.Retry), name)
		ch <- prometheus.MustNewConstMetric(q.processed, prometheus.CounterValue, float64(info.ProcessedTotal), name)
		ch <- prometheus.MustNewConstMetric(q.failed, prometheus.CounterValue, float64(info.FailedTotal), name)
	}
	ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, s.oldest)
}

// snapshot returns figures at most queueCacheTTL old, reading them (one
// reader at a time) when needed; nil when Redis did not answer within
// queueTimeout.
func (q *queueCollector) snapshot() *queueSnapshot {
	q.mu.Lock()
	if q.snap != nil && time.Since(q.snap.at) < queueCacheTTL {
		s := q.snap
		q.mu.Unlock()
		return s
	}
	if q.inflight == nil {
		done := make(chan struct{})
		q.inflight = done
		go func() {
			s := q.read()
			q.mu.Lock()
			q.snap, q.inflight = s, nil
			q.mu.Unlock()
			close(done)
		}()
	}
	done := q.inflight
	q.mu.Unlock()
	t := time.NewTimer(queueTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.snap
}

// read reads the figures from Redis.
func (q *queueCollector) read() *queueSnapshot {
	infos, err := queueInfos(q.insp, q.queues)
	if err != nil {
		q.log.Debug("metrics: read the queues", "err", err)
		return &queueSnapshot{at: time.Now()}
	}
	s := &queueSnapshot{infos: infos, ok: true}
	s.oldest = q.oldestUndelivered(s.infos[jobs.QueueWebhooks])
	s.at = time.Now()
	return s
}

// oldestUndelivered is the age in seconds of the oldest webhook event not
// yet delivered (see queueCollector).
func (q *queueCollector) oldestUndelivered(info *asynq.QueueInfo) float64 {
	if info == nil {
		return 0
	}
	age := info.Latency.Seconds()
	if info.Retry == 0 {
		return age
	}
	// Only the rare read of the retry set is cached longer (the creation
	// time it found, so that the age still grows); the pending latency
	// above is fresh.
	q.mu.Lock()
	oldest, at := q.oldestT, q.oldestAt
	q.mu.Unlock()
	if time.Since(at) >= oldestTTL {
		oldest = q.oldestRetry()
		q.mu.Lock()
		q.oldestT, q.oldestAt = oldest, time.Now()
		q.mu.Unlock()
	}
	if oldest.IsZero() {
		return age
	}
	return max(age, time.Since(oldest).Seconds())
}

// oldestRetry walks the retry sets of the webhooks queues (every shard)
// for the creation time of the oldest delivery; zero when there is none.
func (q *queueCollector) oldestRetry() time.Time {
	var oldest time.Time
	shards, err := webhookShards(q.insp)
	if err != nil {
		q.log.Debug("metrics: list webhook queues", "err", err)
		return oldest
	}
	read := 0
	for _, queue := range shards {
		for page := 1; read < oldestScanLimit; page++ {
			tasks, err := q.insp.ListRetryTasks(queue, asynq.PageSize(oldestPageSize), asynq.Page(page))
			if err != nil {
				q.log.Debug("metrics: list webhook retries", "err", err)
				break
			}
			read += len(tasks)
			for _, t := range tasks {
				if c, ok := deliveryCreated(t.ID); ok && (oldest.IsZero() || c.Before(oldest)) {
					oldest = c
				}
			}
			if len(tasks) < oldestPageSize {
				break
			}
		}
	}
	return oldest
}

// deliveryCreated reads the creation time out of a delivery id, "dlv_" and
// a UUIDv7.
func deliveryCreated(id string) (time.Time, bool) {
	raw, ok := strings.CutPrefix(id, "dlv_")
	if !ok {
		return time.Time{}, false
	}
	u, err := uuid.Parse(raw)
	if err != nil || u.Version() != 7 {
		return time.Time{}, false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec), true
}
