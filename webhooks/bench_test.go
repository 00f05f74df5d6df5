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

// benchOptions vary the harness: the sink's answer time and the
// deliverer's local slot wait (0: the default).
type benchOptions struct {
	sinkDelay time.Duration
	localWait time.Duration
}

func newBenchHarness(b *testing.B, opts ...benchOptions) *benchHarness {
	b.Helper()
	var o benchOptions
	if len(opts) > 0 {
		o = opts[0]
	}
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
		if o.sinkDelay > 0 {
			time.Sleep(o.sinkDelay)
		}
		w.WriteHeader(http.StatusOK)
		h.count()
	}))
	b.Cleanup(h.sink.Close)

	quiet := slog.New(slog.DiscardHandler)
	h.store = webhooks.NewStore(rdb, webhooks.StoreConfig{Guard: devGuard()})
	d, err := webhooks.NewDeliverer(h.store, webhooks.DelivererConfig{Logger: quiet, SlotLocalWait: o.localWait})
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

// BenchmarkDeliverySlotWait measures publish→receipt latency at a paced
// 200 deliveries/s to one endpoint whose receiver answers in 15 ms (so its
// 4 slots are often all in flight, as with strict durability's slower
// attempts), without the local slot wait (every delivery that meets 4
// busy slots is postponed through an Asynq retry) and with it, in the
// same run, and prints both p99s and their ratio (decision 87).
func BenchmarkDeliverySlotWait(b *testing.B) {
	const sinkDelay = 15 * time.Millisecond
	var p99 [2]float64
	for i, c := range []struct {
		name      string
		localWait time.Duration
	}{{"postpone-only", -1}, {"local-wait", 0}} {
		b.Run(c.name+"/steady-200/s", func(b *testing.B) {
			h := newBenchHarness(b, benchOptions{sinkDelay: sinkDelay, localWait: c.localWait})
			_, p99[i] = h.steadyLatency(b)
		})
	}
	if p99[0] > 0 && p99[1] > 0 {
		fmt.Printf("BenchmarkDeliverySlotWait: p99 publish→receipt at 200/s, receiver %s: %.1f ms postponing only, %.1f ms with the local wait: ratio %.3f\n",
			sinkDelay, p99[0], p99[1], p99[1]/p99[0])
	}
}

// steady publishes 200 deliveries per second, evenly, for a second per op,
// and reports the latency from publishing to the sink's receipt.
func (h *benchHarness) steady(b *testing.B) { h.steadyLatency(b) }

// steadyLatency is steady, and returns the p50 and p99 in ms.
func (h *benchHarness) steadyLatency(b *testing.B) (p50, p99 float64) {
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
		p50, p99 = q(0.5), q(0.99)
		b.ReportMetric(p50, "p50-ms")
		b.ReportMetric(p99, "p99-ms")
	}
	return p50, p99
}
