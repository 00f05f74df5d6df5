package webhooks_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// benchBatch is how many deliveries (or raw tasks) one benchmark op
// pushes through, end to end.
const benchBatch = 500

// benchEnqueuers is how many goroutines publish and enqueue at once, as
// many fan-out tasks would.
const benchEnqueuers = 16

// BenchmarkDelivery measures webhook deliveries per second through real
// Asynq and Redis to a local 200-OK sink (publish the event and its
// delivery, enqueue the delivery task, sign, POST, record the attempt),
// beside raw Asynq throughput (enqueue a task, run a no-op handler) on the
// same worker in the same run, and prints the ratio.
func BenchmarkDelivery(b *testing.B) {
	h := newBenchHarness(b)
	var raw, hooks float64
	b.Run("asynq-raw", func(b *testing.B) { raw = h.run(b, h.rawOp) })
	b.Run("deliveries", func(b *testing.B) { hooks = h.run(b, h.deliveryOp) })
	if raw > 0 && hooks > 0 {
		// Printed, not logged: the log of a benchmark with sub-benchmarks
		// is not shown.
		fmt.Printf("BenchmarkDelivery: %.0f deliveries/s vs %.0f raw Asynq tasks/s: ratio %.2f (worker concurrency %d, batch %d)\n",
			hooks, raw, hooks/raw, h.concurrency, benchBatch)
	}
	b.Run("steady-200/s", h.steady)
}

type benchHarness struct {
	store       *webhooks.Store
	notifier    *jobs.Notifier
	client      *asynq.Client
	sink        *httptest.Server
	tenant      string
	endpoint    string
	concurrency int

	// done counts handled raw tasks and received deliveries; wake is
	// signalled when it reaches want.
	done, want atomic.Int64
	wake       chan struct{}

	mu     sync.Mutex
	sentAt map[string]time.Time // event id → when published, for latency
	lat    []time.Duration
}

func newBenchHarness(b *testing.B) *benchHarness {
	b.Helper()
	rdb := redistest.Shared(b).NewClient(b)
	h := &benchHarness{tenant: "bench", concurrency: 50, wake: make(chan struct{}, 1), sentAt: map[string]time.Time{}}
	h.sink = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		h.mu.Lock()
		if t0, ok := h.sentAt[id]; ok {
			h.lat = append(h.lat, time.Since(t0))
			delete(h.sentAt, id)
		}
		h.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		h.count()
	}))
	b.Cleanup(h.sink.Close)

	quiet := slog.New(slog.DiscardHandler)
	h.store = webhooks.NewStore(rdb, webhooks.StoreConfig{Guard: devGuard()})
	d, err := webhooks.NewDeliverer(h.store, webhooks.DelivererConfig{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Close)
	h.client = asynq.NewClientFromRedisClient(rdb)
	ostore := orders.NewStore(rdb, orders.StoreConfig{})
	h.notifier = jobs.NewNotifier(ostore, h.store, d, h.client, asynq.NewInspectorFromRedisClient(rdb), jobs.NotifierConfig{Logger: quiet})
	w := jobs.NewWorker(rdb, jobs.NewSaga(ostore, nil, nil, nil, jobs.SagaConfig{Logger: quiet}), jobs.WorkerConfig{Concurrency: h.concurrency, Logger: quiet})
	h.notifier.Register(w)
	w.Mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error { h.count(); return nil })
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Shutdown)

	ep, _, err := h.store.CreateEndpoint(context.Background(), h.tenant, webhooks.EndpointInput{URL: h.sink.URL + "/hooks"})
	if err != nil {
		b.Fatal(err)
	}
	h.endpoint = ep.ID
	return h
}

func (h *benchHarness) count() {
	if h.done.Add(1) == h.want.Load() {
		h.wake <- struct{}{}
	}
}

// run times ops of benchBatch items and returns items per second.
func (h *benchHarness) run(b *testing.B, op func(b *testing.B, i int)) float64 {
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		h.done.Store(0)
		h.want.Store(benchBatch)
		op(b, n)
		select {
		case <-h.wake:
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d done within a minute", h.done.Load(), benchBatch)
		}
		n++
	}
	perSec := float64(n*benchBatch) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "items/s")
	return perSec
}

// parallel runs f(k) for k in [0, benchBatch) on benchEnqueuers goroutines.
func parallel(b *testing.B, f func(k int) error) {
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, benchEnqueuers)
	for range benchEnqueuers {
		wg.Go(func() {
			for k := int(next.Add(1)) - 1; k < benchBatch; k = int(next.Add(1)) - 1 {
				if err := f(k); err != nil {
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
}

func (h *benchHarness) rawOp(b *testing.B, _ int) {
	ctx := context.Background()
	parallel(b, func(int) error {
		_, err := h.client.EnqueueContext(ctx, asynq.NewTask("bench:noop", nil, asynq.Queue(jobs.QueueWebhooks)))
		return err
	})
}

var benchOrders atomic.Int64

// deliveryOp does what the fan-out of benchBatch ended orders does, then
// lets the worker deliver.
func (h *benchHarness) deliveryOp(b *testing.B, _ int) {
	ctx := context.Background()
	parallel(b, func(int) error {
		return h.publish(ctx)
	})
}

// publish stores one event with its delivery and enqueues the delivery.
func (h *benchHarness) publish(ctx context.Context) error {
	n := benchOrders.Add(1)
	orderID := fmt.Sprintf("0190f1a2-7b3c-7d4e-8f90-%012d", n)
	ev := &webhooks.Event{
		ID: webhooks.EventID(h.tenant, orderID, 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now().UTC(), Sequence: 4,
		Data: []byte(`{"id":"` + orderID + `","account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market","status":"executed"}`),
	}
	h.mu.Lock()
	h.sentAt[ev.ID] = time.Now()
	h.mu.Unlock()
	refs, err := h.store.Publish(ctx, h.tenant, ev, "")
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := h.notifier.EnqueueDelivery(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// steady publishes 200 deliveries per second, evenly, for a second per op,
// and reports the latency from publishing to the sink's receipt.
func (h *benchHarness) steady(b *testing.B) {
	ctx := context.Background()
	h.mu.Lock()
	h.lat = h.lat[:0]
	h.mu.Unlock()
	const rate = 200
	for b.Loop() {
		h.done.Store(0)
		h.want.Store(rate)
		tick := time.NewTicker(time.Second / rate)
		for range rate {
			<-tick.C
			go func() {
				if err := h.publish(ctx); err != nil {
					b.Error(err)
				}
			}()
		}
		tick.Stop()
		select {
		case <-h.wake:
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d delivered within a minute", h.done.Load(), rate)
		}
	}
	h.mu.Lock()
	lat := slices.Clone(h.lat)
	h.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
	}
}
