//go:build bench

package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// deliveryEndpoints is how many tenants, each with one endpoint on the same
// receiver, the deliveries are spread over: the per-endpoint cap (4 in
// flight, DelivererConfig.EndpointConcurrency) times this is above the
// worker's 50 webhook slots, so the cap does not bind and the figure is
// the pipeline's own.
const deliveryEndpoints = 16

// deliveries is issue 16's webhook row: n deliveries (an event stored with
// its delivery and the delivery task enqueued by 64 goroutines, as the
// fan-out does) run by a worker (jobs.NewWorker, concurrency 50, the
// notifier's DeliverTask: signing, breaker, attempt log) to a local 200-OK
// receiver; beside the baseline, raw Asynq on the same worker: n tasks
// enqueued the same way whose handler POSTs the same body to the same
// receiver with a plain http.Client. Each rate is from the first enqueue to
// the receiver's last 2xx.
func (e *loadEnv) deliveries(ctx context.Context) (deliv, raw Row) {
	n := int(500 * e.cfg.duration.Seconds())
	var got atomic.Int64
	want := atomic.Int64{}
	wake := make(chan struct{}, 1)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		if got.Add(1) == want.Load() {
			wake <- struct{}{}
		}
	}))
	defer sink.Close()

	quiet := slog.New(slog.DiscardHandler)
	store := webhooks.NewStore(e.rdb, webhooks.StoreConfig{Guard: webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true})})
	d, err := webhooks.NewDeliverer(store, webhooks.DelivererConfig{Logger: quiet})
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	client := asynq.NewClientFromRedisClient(e.rdb)
	ostore := orders.NewStore(e.rdb, orders.StoreConfig{})
	notifier := jobs.NewNotifier(ostore, store, d, client, asynq.NewInspectorFromRedisClient(e.rdb), jobs.NotifierConfig{Logger: quiet})
	w := jobs.NewWorker(e.rdb, jobs.NewSaga(ostore, nil, nil, nil, jobs.SagaConfig{Logger: quiet}), jobs.WorkerConfig{Logger: quiet})
	notifier.Register(w)
	hc := newHTTPClient(64)
	defer hc.CloseIdleConnections()
	w.Mux.HandleFunc("load:post", func(ctx context.Context, t *asynq.Task) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sink.URL+"/raw", bytes.NewReader(t.Payload()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode >= 300 {
			return fmt.Errorf("POST: %s", res.Status)
		}
		return nil
	})
	if err := w.Start(); err != nil {
		e.t.Fatal(err)
	}
	defer w.Shutdown()
	for i := range deliveryEndpoints {
		if _, _, err := store.CreateEndpoint(ctx, fmt.Sprintf("hook%d", i), webhooks.EndpointInput{URL: fmt.Sprintf("%s/hooks/%d", sink.URL, i)}); err != nil {
			e.t.Fatal(err)
		}
	}
	event := func(k int64) *webhooks.Event {
		t := fmt.Sprintf("hook%d", k%deliveryEndpoints)
		orderID := fmt.Sprintf("0190f1a2-7b3c-7d4e-8f90-%012d", k)
		return &webhooks.Event{
			ID: webhooks.EventID(t, orderID, 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now().UTC(), Sequence: 4,
			Data: fmt.Appendf(nil, `{"id":%q,"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market","status":"executed"}`, orderID),
		}
	}
	var seq atomic.Int64
	phase := func(name string, total int, one func(ctx context.Context, k int64) error) Row {
		got.Store(0)
		want.Store(int64(total))
		var issued atomic.Int64
		before := e.usage(ctx)
		start := time.Now()
		filling, filled := context.WithCancel(ctx)
		defer filled()
		r := ClosedLoop(filling, e.cfg.clients, time.Hour, func(context.Context, int) error {
			if issued.Add(1) > int64(total) {
				filled()
				return errDone
			}
			return one(ctx, seq.Add(1))
		})
		if r.Ops != total {
			e.t.Fatalf("%s: %d of %d enqueued: %v", name, r.Ops, total, r.FirstErr)
		}
		e.t.Logf("%s: %d enqueued in %v", name, total, time.Since(start))
		select {
		case <-wake:
		case <-time.After(time.Minute + 10*e.cfg.duration):
			e.t.Errorf("%s: %d of %d received by the deadline", name, got.Load(), total)
		}
		elapsed := time.Since(start)
		row := RowOf(name, "deliv/s", "", Run{Ops: int(got.Load()), Elapsed: elapsed})
		row.Cost = e.cost(ctx, name, before, total)
		return row
	}
	// Warm-up: connections, scripts.
	warm := int(200 * e.cfg.warmup.Seconds())
	post := func(ctx context.Context, k int64) error {
		b, _ := event(k).Body()
		_, err := client.EnqueueContext(ctx, asynq.NewTask("load:post", b, asynq.Queue(jobs.QueueWebhooks), asynq.MaxRetry(10)))
		return err
	}
	deliver := func(ctx context.Context, k int64) error {
		ev := event(k)
		refs, err := store.Publish(ctx, fmt.Sprintf("hook%d", k%deliveryEndpoints), ev, "")
		if err != nil {
			return err
		}
		for _, r := range refs {
			if err := notifier.EnqueueDelivery(ctx, r); err != nil {
				return err
			}
		}
		return nil
	}
	phase("warm-up raw", warm, post)
	phase("warm-up deliveries", warm, deliver)
	raw = phase("baseline: asynq + HTTP POST, same receiver", n, post)
	deliv = phase(fmt.Sprintf("webhook deliveries (%d endpoints)", deliveryEndpoints), n, deliver)
	return deliv, raw
}
