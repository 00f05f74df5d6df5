package webhooks_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/asyncgate/asyncgate/internal/brokertest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/webhooks"
)

// benchPublishers is how many publishes are in flight at once, as many
// delivery tasks of one endpoint would be.
const benchPublishers = 50

// BenchmarkBrokerDestinations measures deliveries per second to a RabbitMQ
// exchange and to a JetStream stream — each a Deliverer.Deliver: read the
// delivery from Redis, sign, publish, wait for the confirm or ack, record
// the attempt — beside the raw client library publishing the same messages
// (same body, same headers, persistent and mandatory under confirms; with
// Nats-Msg-Id under acks) on the same broker with as many in flight, and
// prints the ratios. The "sender" rows are the publish step alone
// (signing included), without Redis.
func BenchmarkBrokerDestinations(b *testing.B) {
	b.Run("rabbitmq", func(b *testing.B) {
		r := brokertest.RabbitMQ(b)
		exchange, _ := r.Exchange(b)
		raw := newRawAMQP(b, r.URL)
		h := newDestBench(b, r.DestURL(exchange))
		var rawRate, sendRate, dlvRate float64
		b.Run("raw-amqp091", func(b *testing.B) {
			rawRate = runBatches(b, func(b *testing.B, m *webhooks.Message) error { return raw.publish(exchange, m) })
		})
		b.Run("sender", func(b *testing.B) { sendRate = runBatches(b, h.send) })
		b.Run("deliveries", func(b *testing.B) { dlvRate = h.runDeliveries(b) })
		printRatios("RabbitMQ exchange", rawRate, sendRate, dlvRate)
	})
	b.Run("jetstream", func(b *testing.B) {
		n := brokertest.JetStream(b)
		_, subject := n.Stream(b)
		h := newDestBench(b, n.DestURL(subject))
		var rawRate, sendRate, dlvRate float64
		b.Run("raw-nats.go", func(b *testing.B) {
			rawRate = runBatches(b, func(b *testing.B, m *webhooks.Message) error {
				msg := &nats.Msg{Subject: subject, Data: m.Body, Header: nats.Header{}}
				for k, v := range m.Header {
					msg.Header[strings.ToLower(k)] = v
				}
				_, err := n.JS.PublishMsg(context.Background(), msg, jetstream.WithMsgID(m.ID))
				return err
			})
		})
		b.Run("sender", func(b *testing.B) { sendRate = runBatches(b, h.send) })
		b.Run("deliveries", func(b *testing.B) { dlvRate = h.runDeliveries(b) })
		printRatios("JetStream stream", rawRate, sendRate, dlvRate)
	})
}

func printRatios(what string, raw, send, dlv float64) {
	if raw > 0 && send > 0 && dlv > 0 {
		// Printed, not logged: the log of a benchmark with sub-benchmarks
		// is not shown.
		fmt.Printf("BenchmarkBrokerDestinations: %s: %.0f deliveries/s, %.0f sender publishes/s vs %.0f raw publishes/s: ratios %.2f and %.2f (%d in flight)\n",
			what, dlv, send, raw, dlv/raw, send/raw, benchPublishers)
	}
}

var benchMsgs atomic.Int64

// benchMessage is a signed message like a delivery's.
func benchMessage(secret webhooks.Secret) *webhooks.Message {
	id := fmt.Sprintf("evt_bench-%d-%d", time.Now().UnixNano(), benchMsgs.Add(1))
	body := []byte(`{"id":"` + id + `","type":"order.executed","created_at":"2026-01-01T00:00:00Z","sequence":4,"data":{"id":"0190f1a2-7b3c-7d4e-8f90-000000000001","account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market","status":"executed"}}`)
	now := time.Now()
	h := webhooks.Headers(id, now, body, secret)
	h.Set("Content-Type", "application/json")
	return &webhooks.Message{ID: id, Type: webhooks.EventOrderExecuted, Body: body, Header: h, Timestamp: now}
}

var benchSecret = webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=")

// runBatches times ops of benchBatch publishes, benchPublishers at once,
// and returns publishes per second.
func runBatches(b *testing.B, publish func(*testing.B, *webhooks.Message) error) float64 {
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		var wg sync.WaitGroup
		var next atomic.Int64
		var failed atomic.Value
		for range benchPublishers {
			wg.Go(func() {
				for next.Add(1) <= benchBatch {
					if err := publish(b, benchMessage(benchSecret)); err != nil {
						failed.Store(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		n++
	}
	perSec := float64(n*benchBatch) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "publishes/s")
	return perSec
}

// rawAMQP publishes as a careful amqp091 user would: one connection, one
// channel in confirm mode, persistent and mandatory messages.
type rawAMQP struct {
	ch *amqp.Channel
}

func newRawAMQP(b *testing.B, url string) *rawAMQP {
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	return &rawAMQP{ch: ch}
}

func (r *rawAMQP) publish(exchange string, m *webhooks.Message) error {
	headers := amqp.Table{}
	for k, v := range m.Header {
		headers[strings.ToLower(k)] = v[0]
	}
	dc, err := r.ch.PublishWithDeferredConfirm(exchange, m.Type, true, false, amqp.Publishing{
		Headers: headers, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: m.ID, Timestamp: m.Timestamp, Body: m.Body,
	})
	if err != nil {
		return err
	}
	if !dc.Wait() {
		return fmt.Errorf("nack")
	}
	return nil
}

// destBench is a store with one endpoint at dest, its deliverer and its
// sender.
type destBench struct {
	dest      *url.URL
	store     *webhooks.Store
	deliverer *webhooks.Deliverer
	sender    webhooks.Sender
}

func newDestBench(b *testing.B, dest string) *destBench {
	b.Helper()
	h := &destBench{}
	h.dest, _ = url.Parse(dest)
	h.store = webhooks.NewStore(redistest.Shared(b).NewClient(b), webhooks.StoreConfig{Guard: devGuard()})
	d, err := webhooks.NewDeliverer(h.store, webhooks.DelivererConfig{Logger: slog.New(slog.DiscardHandler),
		// One destination takes every publisher at once: the per-endpoint cap
		// (4 by default) would measure the cap, not the delivery path.
		EndpointConcurrency: benchPublishers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Close)
	h.deliverer = d
	h.sender = webhooks.NewAMQPSender(webhooks.DelivererConfig{Guard: devGuard()})
	if h.dest.Scheme == "nats" {
		h.sender = webhooks.NewNATSSender(webhooks.DelivererConfig{Guard: devGuard()})
	}
	b.Cleanup(h.sender.Close)
	if _, _, err := h.store.CreateEndpoint(context.Background(), "bench", webhooks.EndpointInput{URL: dest}); err != nil {
		b.Fatal(err)
	}
	return h
}

func (h *destBench) send(b *testing.B, m *webhooks.Message) error {
	if sent := h.sender.Send(context.Background(), h.dest, m); sent.Err != "" {
		return fmt.Errorf("%s", sent.Err)
	}
	return nil
}

// runDeliveries times the delivery of batches of benchBatch published
// events (publishing them is not timed) and returns deliveries per second.
func (h *destBench) runDeliveries(b *testing.B) float64 {
	b.ReportAllocs()
	ctx := context.Background()
	var took time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		refs := make([]webhooks.Ref, 0, benchBatch)
		for range benchBatch {
			k := benchOrders.Add(1)
			orderID := fmt.Sprintf("0190f1a2-7b3c-7d4e-8f90-%012d", k)
			ev := &webhooks.Event{
				ID: webhooks.EventID("bench", orderID, 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now().UTC(), Sequence: 4,
				Data: []byte(`{"id":"` + orderID + `","account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market","status":"executed"}`),
			}
			rs, err := h.store.Publish(ctx, "bench", ev, "")
			if err != nil {
				b.Fatal(err)
			}
			refs = append(refs, rs...)
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		var failed atomic.Value
		for range benchPublishers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(len(refs)); i = next.Add(1) - 1 {
					res, err := h.deliverer.Deliver(ctx, refs[i])
					if err == nil && res.Status != webhooks.DeliveryDelivered {
						err = fmt.Errorf("delivery: %+v", res)
					}
					if err != nil {
						failed.Store(err)
						return
					}
				}
			})
		}
		wg.Wait()
		took += time.Since(start)
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		n++
	}
	perSec := float64(n*benchBatch) / took.Seconds()
	b.ReportMetric(perSec, "deliveries/s")
	return perSec
}

// BenchmarkBrokerDestinationsSteady publishes 200 events a second through
// the whole delivery path (store, Asynq on Redis, Deliverer) to a RabbitMQ
// exchange and to a JetStream stream, and reports the latency from
// publishing the event to a consumer's receipt of the message.
func BenchmarkBrokerDestinationsSteady(b *testing.B) {
	b.Run("rabbitmq", func(b *testing.B) {
		r := brokertest.RabbitMQ(b)
		exchange, queue := r.Exchange(b)
		h := newBenchHarness(b)
		h.tenant = "bench-amqp"
		msgs, err := r.Ch(b).Consume(queue, "", true, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for m := range msgs {
				h.received(m.MessageId)
			}
		}()
		if _, _, err := h.store.CreateEndpoint(context.Background(), h.tenant, webhooks.EndpointInput{URL: r.DestURL(exchange)}); err != nil {
			b.Fatal(err)
		}
		b.Run("steady-200/s", h.steady)
	})
	b.Run("jetstream", func(b *testing.B) {
		n := brokertest.JetStream(b)
		st, subject := n.Stream(b)
		h := newBenchHarness(b)
		h.tenant = "bench-nats"
		cons, err := st.CreateOrUpdateConsumer(context.Background(), jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) { h.received(m.Headers().Get("webhook-id")) })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cc.Stop)
		if _, _, err := h.store.CreateEndpoint(context.Background(), h.tenant, webhooks.EndpointInput{URL: n.DestURL(subject)}); err != nil {
			b.Fatal(err)
		}
		b.Run("steady-200/s", h.steady)
	})
}

// received records the arrival of message id at a consumer.
func (h *benchHarness) received(id string) {
	h.mu.Lock()
	t0, ok := h.sentAt[id]
	if ok {
		h.lat = append(h.lat, time.Since(t0))
		delete(h.sentAt, id)
	}
	h.mu.Unlock()
	if ok {
		h.count()
	}
}
