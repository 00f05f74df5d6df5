package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"

	"github.com/asyncgate/asyncgate/internal/brokertest"
	"github.com/asyncgate/asyncgate/internal/oteltest"
	"github.com/asyncgate/asyncgate/webhooks"
)

// Broker destinations, against the real RabbitMQ and NATS JetStream (see
// internal/brokertest): every test has its own exchange and queue, or its
// own stream.

// publishType publishes a new event of type typ for the tenant.
func (b *testBundle) publishType(t *testing.T, tenant, typ string) (*webhooks.Event, []webhooks.Ref) {
	t.Helper()
	n := eventSeq.Add(1)
	orderID := fmt.Sprintf("0190f1a2-7b3c-7d4e-8f90-%012d", n)
	status := strings.TrimPrefix(typ, "order.")
	ev := &webhooks.Event{
		ID: webhooks.EventID(tenant, orderID, 4), Type: typ, CreatedAt: b.clock.now().UTC(), Sequence: 4,
		Data: []byte(`{"id":"` + orderID + `","status":"` + status + `","tenant":"` + tenant + `"}`),
	}
	refs, err := b.store.Publish(context.Background(), tenant, ev, "")
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ev, refs
}

// tableHeader turns AMQP headers into an http.Header, as a consumer does
// before verifying.
func tableHeader(tbl amqp.Table) http.Header {
	h := http.Header{}
	for k, v := range tbl {
		if s, ok := v.(string); ok {
			h.Set(k, s)
		}
	}
	return h
}

// natsHeader turns NATS headers (lower-case keys, as sent) into an
// http.Header.
func natsHeader(m map[string][]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		for _, x := range v {
			h.Add(k, x)
		}
	}
	return h
}

// verifyBoth checks a message with the package's Verify and with the
// official Standard Webhooks library.
func verifyBoth(t *testing.T, secret webhooks.Secret, h http.Header, body []byte) {
	t.Helper()
	if err := webhooks.Verify(secret, h, body, 0); err != nil {
		t.Errorf("webhooks.Verify: %v", err)
	}
	if err := officialReceiver(t, secret).Verify(body, h); err != nil {
		t.Errorf("the Standard Webhooks library: %v", err)
	}
}

func TestAMQPDestinationDeliversSignedPersistentMessages(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	b := setup(t)
	exchange, queue := r.Exchange(t)
	ep, secret := b.endpoint(t, "t1", r.DestURL(exchange))
	if strings.Contains(ep.URL, "guest:guest") || !strings.Contains(ep.URL, "guest:***@") {
		t.Errorf("the endpoint shows its URL as %q, want the password masked", ep.URL)
	}

	want := map[string]string{} // webhook id → event type
	for _, typ := range []string{webhooks.EventOrderExecuted, webhooks.EventOrderRejected} {
		ev, refs := b.publishType(t, "t1", typ)
		res := b.deliver(t, one(t, refs))
		if res.Outcome != webhooks.Done || res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("%s: deliver = %+v, want delivered", typ, res)
		}
		want[ev.ID] = typ
		d := b.delivery(t, one(t, refs))
		if len(d.Attempts) != 1 || d.Attempts[0].Error != "" || strings.Contains(d.URL, "guest:guest") {
			t.Errorf("%s: delivery record %+v", typ, d)
		}
	}

	msgs := waitMessages(t, r, queue, 2)
	for _, m := range msgs {
		typ, ok := want[m.MessageId]
		if !ok {
			t.Errorf("unexpected message id %q", m.MessageId)
			continue
		}
		delete(want, m.MessageId)
		if m.DeliveryMode != amqp.Persistent {
			t.Errorf("%s: delivery mode %d, want persistent (2)", typ, m.DeliveryMode)
		}
		if m.RoutingKey != typ {
			t.Errorf("routing key %q, want the event type %q", m.RoutingKey, typ)
		}
		if m.ContentType != "application/json" || m.Headers["content-type"] != "application/json" {
			t.Errorf("%s: content type %q, header %v", typ, m.ContentType, m.Headers["content-type"])
		}
		if m.Headers["webhook-id"] != m.MessageId {
			t.Errorf("webhook-id %v, message_id %q", m.Headers["webhook-id"], m.MessageId)
		}
		if m.Timestamp.IsZero() || time.Since(m.Timestamp) > time.Hour {
			t.Errorf("%s: timestamp %v", typ, m.Timestamp)
		}
		if !strings.Contains(string(m.Body), `"type":"`+typ+`"`) {
			t.Errorf("body %s is not the %s event", m.Body, typ)
		}
		verifyBoth(t, secret, tableHeader(m.Headers), m.Body)
	}
	if len(want) != 0 {
		t.Errorf("never arrived: %v", want)
	}
	if extra := r.Drain(t, queue); len(extra) != 0 {
		t.Errorf("%d more messages than events", len(extra))
	}
}

// waitMessages polls queue until n messages came, and returns them.
func waitMessages(t *testing.T, r *brokertest.Rabbit, queue string, n int) []amqp.Delivery {
	t.Helper()
	var got []amqp.Delivery
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		got = append(got, r.Drain(t, queue)...)
		if len(got) < n {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(got) < n {
		t.Fatalf("the queue got %d messages, want %d", len(got), n)
	}
	return got
}

func TestAMQPDestinationMissingExchangeFailsThenDelivers(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	b := setup(t)
	exchange := brokertest.Name("later")
	b.endpoint(t, "t1", r.DestURL(exchange, "routing_key", "ledger"))
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	ref := one(t, refs)

	for i := range 2 { // the second attempt finds the same: the channel was re-opened
		res := b.deliver(t, ref)
		if res.Outcome != webhooks.Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "NOT_FOUND - no exchange '"+exchange+"'") {
			t.Fatalf("attempt %d to a missing exchange: %+v, want a retry saying NOT_FOUND - no exchange", i+1, res)
		}
		b.clock.advance(3 * time.Minute)
	}
	d := b.delivery(t, ref)
	if d.Status != webhooks.DeliveryPending || len(d.Attempts) != 2 || !strings.HasPrefix(d.Attempts[0].Error, "amqp: NOT_FOUND - no exchange") {
		t.Fatalf("after two failed attempts: %+v", d)
	}

	r.Declare(t, exchange)
	queue := r.Queue(t, exchange, "ledger")
	if res := b.deliver(t, ref); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("after the exchange was declared: %+v, want delivered", res)
	}
	if got := waitMessages(t, r, queue, 1); got[0].RoutingKey != "ledger" || got[0].MessageId != ref.EventID {
		t.Errorf("got routing key %q, id %q", got[0].RoutingKey, got[0].MessageId)
	}
	if d := b.delivery(t, ref); d.Status != webhooks.DeliveryDelivered || len(d.Attempts) != 3 {
		t.Errorf("delivery after success: %+v", d)
	}
}

func TestAMQPDestinationUnroutableMessageIsAFailedAttempt(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	b := setup(t)
	exchange := brokertest.Name("nobody")
	r.Declare(t, exchange) // no queue bound: the broker returns the message
	b.endpoint(t, "t1", r.DestURL(exchange))
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	res := b.deliver(t, one(t, refs))
	if res.Outcome != webhooks.Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "NO_ROUTE") {
		t.Fatalf("deliver to an exchange with no queue: %+v, want a retry saying NO_ROUTE", res)
	}
}

func TestAMQPDestinationRefusedLoginIsAFailedAttemptWithoutThePassword(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	b := setup(t)
	exchange, queue := r.Exchange(t)
	u, _ := url.Parse(r.DestURL(exchange))
	u.User = url.UserPassword("guest", "s3cr3t-wrong-pw")
	ep, _ := b.endpoint(t, "t1", u.String())
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	res := b.deliver(t, one(t, refs))
	if res.Outcome != webhooks.Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "connect") {
		t.Fatalf("deliver with a wrong password: %+v, want a failed connect", res)
	}
	d := b.delivery(t, one(t, refs))
	eps, err := b.store.Endpoints(context.Background(), "t1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{res.Err.Error(), d.URL, d.Attempts[0].Error, ep.URL, eps[0].URL} {
		if strings.Contains(s, "s3cr3t-wrong-pw") {
			t.Errorf("the password shows in %q", s)
		}
	}
	if got := r.Drain(t, queue); len(got) != 0 {
		t.Errorf("%d messages arrived through a refused login", len(got))
	}
}

func TestAMQPDestinationLosesNothingWhenConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t).VHost(t)
	b := setup(t, func(o *options) { o.store.MaxAttempts = 20 })
	exchange, queue := r.Exchange(t)
	b.endpoint(t, "t1", r.DestURL(exchange))

	// Four workers publish and deliver events without pause, retrying
	// failed attempts, while the broker closes every connection (as a
	// restart does); they stop once 40 more were delivered after it.
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		refs        []webhooks.Ref
		failures    []string
		closedAt    = -1
		afterClosed int
		started     = make(chan struct{})
		startOnce   sync.Once
	)
	// Paced (a few hundred events/s in all) so that rabbitmqctl, slow to
	// start, closes the connections mid-run and not after the cap.
	const after, most, pace = 40, 10000, 5 * time.Millisecond
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				done := (closedAt >= 0 && afterClosed >= after) || len(refs) >= most
				mu.Unlock()
				if done {
					return
				}
				_, rs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
				ref := one(t, rs)
				mu.Lock()
				refs = append(refs, ref)
				mu.Unlock()
				for attempt := 0; ; attempt++ {
					res, err := b.deliverer.Deliver(context.Background(), ref)
					if err != nil {
						t.Errorf("deliver: %v", err)
						return
					}
					if res.Status == webhooks.DeliveryDelivered {
						break
					}
					if res.Outcome != webhooks.Retry || attempt > 15 {
						t.Errorf("delivery %s: %+v", ref.DeliveryID, res)
						return
					}
					mu.Lock()
					failures = append(failures, res.Err.Error())
					mu.Unlock()
					b.clock.advance(3 * time.Minute) // due again
				}
				mu.Lock()
				if closedAt >= 0 {
					afterClosed++
				}
				mu.Unlock()
				startOnce.Do(func() { close(started) })
				time.Sleep(pace)
			}
		})
	}
	<-started
	r.CloseAllConnections(t)
	mu.Lock()
	closedAt = len(refs)
	mu.Unlock()
	wg.Wait()
	if t.Failed() {
		return
	}
	if afterClosed < after {
		t.Fatalf("the connections were closed after the run (%d of %d events before)", closedAt, len(refs))
	}

	got := map[string]int{}
	for _, m := range waitMessages(t, r, queue, len(refs)) {
		got[m.MessageId]++
	}
	for _, m := range r.Drain(t, queue) {
		got[m.MessageId]++
	}
	for _, ref := range refs {
		if got[ref.EventID] == 0 {
			t.Errorf("event %s never arrived", ref.EventID)
		}
	}
	t.Logf("%d events (%d before the connections were closed), %d distinct messages arrived; %d failed attempts: %.300q",
		len(refs), closedAt, len(got), len(failures), failures)
}

func TestNATSDestinationDeliversWithMsgID(t *testing.T) {
	t.Parallel()
	n := brokertest.JetStream(t)
	b := setup(t)
	st, subject := n.Stream(t)
	_, secret := b.endpoint(t, "t1", n.DestURL(subject))
	want := map[string]bool{}
	for _, typ := range []string{webhooks.EventOrderExecuted, webhooks.EventOrderRejected} {
		ev, refs := b.publishType(t, "t1", typ)
		if res := b.deliver(t, one(t, refs)); res.Status != webhooks.DeliveryDelivered {
			t.Fatalf("%s: %+v, want delivered", typ, res)
		}
		want[ev.ID] = true
	}
	msgs := brokertest.Messages(t, st)
	if len(msgs) != 2 {
		t.Fatalf("the stream holds %d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if !want[id] || m.Header.Get("webhook-id") != id {
			t.Errorf("Nats-Msg-Id %q, webhook-id %q", id, m.Header.Get("webhook-id"))
		}
		delete(want, id)
		if m.Header.Get("content-type") != "application/json" {
			t.Errorf("content-type %q", m.Header.Get("content-type"))
		}
		verifyBoth(t, secret, natsHeader(m.Header), m.Data)
	}
}

func TestNATSDestinationWithoutStreamIsAFailedAttempt(t *testing.T) {
	t.Parallel()
	n := brokertest.JetStream(t)
	b := setup(t)
	b.endpoint(t, "t1", n.DestURL("asyncgate.test.nostream."+strings.ReplaceAll(brokertest.Name("x"), "-", "_")))
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	res := b.deliver(t, one(t, refs))
	if res.Outcome != webhooks.Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "no stream") {
		t.Fatalf("deliver with no stream: %+v, want a retry saying no stream", res)
	}
}

// lossySender loses the acknowledgement of the first publish of each
// message: the broker has it, the deliverer hears of a failure.
type lossySender struct {
	webhooks.Sender
	mu   sync.Mutex
	seen map[string]bool
}

func (s *lossySender) Send(ctx context.Context, dest *url.URL, m *webhooks.Message) webhooks.Sent {
	sent := s.Sender.Send(ctx, dest, m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sent.Err == "" && !s.seen[m.ID] {
		s.seen[m.ID] = true
		return webhooks.Sent{Err: "nats: no acknowledgement within 5s (lost by the test)"}
	}
	return sent
}

func TestNATSDestinationStreamSeesARetriedMessageOnce(t *testing.T) {
	t.Parallel()
	n := brokertest.JetStream(t)
	lossy := &lossySender{seen: map[string]bool{}}
	b := setup(t, func(o *options) {
		o.deliverer.NATS = lossy
	})
	lossy.Sender = webhooks.NewNATSSender(webhooks.DelivererConfig{Guard: devGuard(), Timeout: 5 * time.Second})
	t.Cleanup(lossy.Sender.Close)
	st, subject := n.Stream(t)
	b.endpoint(t, "t1", n.DestURL(subject))
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	ref := one(t, refs)
	if res := b.deliver(t, ref); res.Outcome != webhooks.Retry {
		t.Fatalf("first attempt, ack lost: %+v, want a retry", res)
	}
	b.clock.advance(3 * time.Minute)
	if res := b.deliver(t, ref); res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("the retry: %+v, want delivered", res)
	}
	msgs := brokertest.Messages(t, st)
	if len(msgs) != 1 || msgs[0].Header.Get(jetstream.MsgIDHeader) != ref.EventID {
		t.Fatalf("the stream holds %d messages, want the one webhook id once", len(msgs))
	}
}

func TestBrokerDestinationsKeepTenantsApart(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	b := setup(t)
	exA, queueA := r.Exchange(t)
	exB, queueB := r.Exchange(t)
	b.endpoint(t, "tenant-a", r.DestURL(exA))
	b.endpoint(t, "tenant-b", r.DestURL(exB))
	for range 3 {
		_, refs := b.publishType(t, "tenant-b", webhooks.EventOrderExecuted)
		for _, ref := range refs {
			if ref.Tenant != "tenant-b" {
				t.Fatalf("tenant-b's event made a delivery for %s", ref.Tenant)
			}
			b.deliver(t, ref)
		}
	}
	_ = waitMessages(t, r, queueB, 3)
	if got := r.Drain(t, queueA); len(got) != 0 {
		t.Fatalf("tenant-a's exchange got %d of tenant-b's events", len(got))
	}
}

func TestBrokerURLsAreCheckedAtRegistration(t *testing.T) {
	t.Parallel()
	b := setup(t)
	strict := webhooks.NewStore(b.rdb, webhooks.StoreConfig{Guard: webhooks.NewGuard(webhooks.GuardConfig{})})
	tests := []struct {
		name, url string
		store     *webhooks.Store
		want      error
		reason    string
	}{
		{"unknown scheme", "ftp://127.0.0.1/x", b.store, webhooks.ErrInvalidURL, `unknown scheme "ftp"`},
		{"amqp without exchange", "amqp://guest:guest@127.0.0.1:5672/", b.store, webhooks.ErrInvalidURL, "needs ?exchange="},
		{"amqps without exchange", "amqps://u:p@127.0.0.1/vh?routing_key=x", b.store, webhooks.ErrInvalidURL, "needs ?exchange="},
		{"nats without subject", "nats://127.0.0.1:4222", b.store, webhooks.ErrInvalidURL, "needs ?subject="},
		{"nats wildcard subject", "nats://127.0.0.1:4222?subject=orders.*", b.store, webhooks.ErrInvalidURL, "wildcards"},
		{"amqp library option smuggled", "amqp://127.0.0.1/?exchange=x&certfile=/etc/shadow", b.store, webhooks.ErrInvalidURL, `unknown parameter "certfile"`},
		{"bad port", "amqp://u:pw@127.0.0.1:notaport/?exchange=x", b.store, webhooks.ErrInvalidURL, "port"},
		{"not a URL", "amqp://u:p w@[::1/?exchange=x", b.store, webhooks.ErrInvalidURL, ""},
		{"loopback broker without allow-private", "amqp://guest:guest@127.0.0.1:5672/?exchange=x", strict, webhooks.ErrURLNotAllowed, "loopback"},
		{"metadata broker", "nats://169.254.169.254:4222?subject=x", b.store, webhooks.ErrURLNotAllowed, "cloud metadata"},
		{"private broker without allow-private", "amqps://u:pw@10.1.2.3/?exchange=x", strict, webhooks.ErrURLNotAllowed, "private"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tt.store.CreateEndpoint(context.Background(), "t1", webhooks.EndpointInput{URL: tt.url})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("CreateEndpoint(%s) = %v, want %v saying %q", tt.url, err, tt.want, tt.reason)
			}
			for _, secret := range []string{"guest:guest", ":pw@", "p w"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error repeats a credential: %v", err)
				}
			}
		})
	}
	for _, ok := range []string{
		"amqp://guest:guest@127.0.0.1:5672/?exchange=orders",
		"amqps://u:p@127.0.0.1/vhost?exchange=orders.v1&routing_key=ledger",
		"amqp://127.0.0.1/%2F?exchange=x",
		"nats://127.0.0.1:4222?subject=orders.events",
		"tls://token@127.0.0.1?subject=orders",
	} {
		if _, _, err := b.store.CreateEndpoint(context.Background(), "t2", webhooks.EndpointInput{URL: ok}); err != nil {
			t.Errorf("CreateEndpoint(%s): %v", ok, err)
		}
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"amqp://user:pass@host:5672/vh?exchange=x": "amqp://user:***@host:5672/vh?exchange=x",
		"amqps://u:p%40ss@host/?exchange=x":        "amqps://u:***@host/?exchange=x",
		"nats://s3cr3ttoken@host:4222?subject=a.b": "nats://***@host:4222?subject=a.b",
		"tls://user:pw@host?subject=a":             "tls://user:***@host?subject=a",
		"https://example.com/hook?x=1":             "https://example.com/hook?x=1",
		"amqp://host/?exchange=x":                  "amqp://host/?exchange=x",
		"amqp://u:p w@[::1/?exchange=x":            "***",
	} {
		if got := webhooks.MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// MaskURL never shows a password, whatever the URL; the guard's parse of
// broker URLs never panics and never repeats the URL in its errors.
func FuzzMaskURL(f *testing.F) {
	for _, s := range []string{
		"amqp://user:pass@host:5672/vh?exchange=x", "nats://tok@h:4222?subject=a.b", "tls://u:p@h?subject=a",
		"amqps://u:p%40ss@host/?exchange=x&routing_key=k", "https://example.com/x", "amqp://u:p w@[::1/?exchange=x",
		"amqp://u:@h/?exchange=x", "nats://:pw@h?subject=x",
	} {
		f.Add(s)
	}
	// No DNS leaves the machine: every name is unknown.
	g := webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true, Resolver: newResolver(nil)})
	f.Fuzz(func(t *testing.T, raw string) {
		masked := webhooks.MaskURL(raw)
		u, err := url.Parse(raw)
		if err != nil || u.User == nil {
			return
		}
		p, ok := u.User.Password()
		if !ok || len(p) < 3 || strings.Contains(p, "***") {
			return
		}
		u.User = url.User(u.User.Username())
		if strings.Contains(u.String(), p) || strings.Contains(url.PathEscape(u.User.Username()), p) {
			return // the same text is elsewhere in the URL
		}
		if strings.Contains(masked, p) {
			t.Fatalf("MaskURL(%q) = %q shows the password", raw, masked)
		}
		if err := g.CheckURL(context.Background(), raw); err != nil && strings.Contains(err.Error(), p) {
			t.Fatalf("CheckURL(%q) = %v repeats the password", raw, err)
		}
	})
}

// A publish to a broker is a client span naming the messaging system and
// the exchange, never the password, and the message carries its
// traceparent. Not parallel: it installs a global tracer provider.
func TestBrokerDestinationTraceSpan(t *testing.T) {
	r := brokertest.RabbitMQ(t)
	exp := oteltest.Install(t)
	b := setup(t)
	exchange, queue := r.Exchange(t)
	b.endpoint(t, "t1", r.DestURL(exchange))
	_, refs := b.publishType(t, "t1", webhooks.EventOrderExecuted)
	ctx, parent := otel.Tracer("test").Start(context.Background(), "asynq.process webhook:deliver")
	if res, err := b.deliverer.Deliver(ctx, one(t, refs)); err != nil || res.Status != webhooks.DeliveryDelivered {
		t.Fatalf("deliver: %+v, %v", res, err)
	}
	parent.End()
	spans := exp.GetSpans()
	if len(spans) != 2 { // ours and the test's parent
		t.Fatalf("%d spans, want 2", len(spans))
	}
	s := spans[0]
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if s.Name != "webhook.deliver" || attrs["messaging.system"] != "rabbitmq" || attrs["messaging.destination.name"] != exchange || attrs["http.request.method"] != "" {
		t.Fatalf("span %q attributes %v", s.Name, attrs)
	}
	for k, v := range attrs {
		if strings.Contains(v, "guest:guest") {
			t.Errorf("attribute %s carries the credentials", k)
		}
	}
	m := waitMessages(t, r, queue, 1)[0]
	want := "00-" + s.SpanContext.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
	if got := m.Headers["traceparent"]; got != want {
		t.Fatalf("message traceparent %v, want %q", got, want)
	}
}
