package client_test

import (
	"context"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/internal/brokertest"
	"github.com/asyncgate/asyncgate/webhooks"
)

// The README's consumers ("Event destinations"), word for word: see
// TestREADMEConsumersAreTheTestedOnes.

// consumeRabbitMQ hands handle each verified event from queue until ctx ends.
func consumeRabbitMQ(ctx context.Context, url, queue, secret string, handle func(body []byte)) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	msgs, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	for m := range msgs {
		if client.VerifyWebhook(secret, m.Headers, m.Body) != nil {
			m.Nack(false, false) // not signed with your secret: drop it
			continue
		}
		handle(m.Body) // delivery is at least once: skip a webhook-id already handled
		m.Ack(false)
	}
	return nil
}

// consumeNATS hands handle each verified event of stream until ctx ends.
func consumeNATS(ctx context.Context, url, stream, secret string, handle func(body []byte)) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "ledger", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if client.VerifyWebhook(secret, m.Headers(), m.Data()) != nil {
			m.Term() // not signed with your secret: never redeliver it
			return
		}
		handle(m.Data())
		m.Ack()
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

func TestREADMEConsumersAreTheTestedOnes(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Event destinations\n")
	if !ok {
		t.Fatal(`README.md has no "## Event destinations" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	self, err := os.ReadFile("destinations_test.go")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(section, -1)
	var funcs int
	for _, b := range blocks {
		if strings.Contains(b[1], "func consume") {
			funcs++
			if !strings.Contains(string(self), b[1]) {
				t.Errorf("the README's consumer is not the one tested here:\n%s", b[1])
			}
		}
	}
	if funcs != 2 {
		t.Errorf("the README's Event destinations section has %d consumer functions, want 2", funcs)
	}
}

// signed is a message as asyncgate's senders get it.
func signed(t *testing.T, secret webhooks.Secret, id string) *webhooks.Message {
	t.Helper()
	body := []byte(`{"id":"` + id + `","type":"order.executed","data":{"id":"o-1"}}`)
	now := time.Now()
	h := webhooks.Headers(id, now, body, secret)
	h.Set("Content-Type", "application/json")
	return &webhooks.Message{ID: id, Type: "order.executed", Body: body, Header: h, Timestamp: now}
}

// collect gathers what a consumer handles.
type collect struct {
	mu   sync.Mutex
	got  []string
	done chan struct{}
	want int
}

func (c *collect) handle(body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, string(body))
	if len(c.got) == c.want {
		close(c.done)
	}
}

func (c *collect) wait(t *testing.T) []string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the consumer handled %d events within 20s, want %d", len(c.got), c.want)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

func TestREADMEConsumersVerifyBrokerMessages(t *testing.T) {
	guard := webhooks.NewGuard(webhooks.GuardConfig{AllowPrivate: true})
	secret, _ := webhooks.NewSecret()
	other, _ := webhooks.NewSecret()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("RabbitMQ", func(t *testing.T) {
		r := brokertest.RabbitMQ(t)
		exchange, queue := r.Exchange(t)
		s := webhooks.NewAMQPSender(webhooks.DelivererConfig{Guard: guard})
		defer s.Close()
		dest, _ := url.Parse(r.DestURL(exchange))
		// One forged message (signed with another secret), then a real one.
		for _, m := range []*webhooks.Message{signed(t, other, "evt_forged"), signed(t, secret, "evt_real")} {
			if sent := s.Send(ctx, dest, m); sent.Err != "" {
				t.Fatal(sent.Err)
			}
		}
		c := &collect{done: make(chan struct{}), want: 1}
		cctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- consumeRabbitMQ(cctx, r.URL, queue, secret.String(), c.handle) }()
		got := c.wait(t)
		stop()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !strings.Contains(got[0], "evt_real") {
			t.Fatalf("handled %q, want the real event only", got)
		}
	})

	t.Run("NATS", func(t *testing.T) {
		n := brokertest.JetStream(t)
		st, subject := n.Stream(t)
		s := webhooks.NewNATSSender(webhooks.DelivererConfig{Guard: guard})
		defer s.Close()
		dest, _ := url.Parse(n.DestURL(subject))
		for _, m := range []*webhooks.Message{signed(t, other, "evt_forged"), signed(t, secret, "evt_real")} {
			if sent := s.Send(ctx, dest, m); sent.Err != "" {
				t.Fatal(sent.Err)
			}
		}
		c := &collect{done: make(chan struct{}), want: 1}
		cctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- consumeNATS(cctx, n.URL, st.CachedInfo().Config.Name, secret.String(), c.handle) }()
		got := c.wait(t)
		stop()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !strings.Contains(got[0], "evt_real") {
			t.Fatalf("handled %q, want the real event only", got)
		}
	})
}

func TestVerifyWebhookTakesBrokerHeaders(t *testing.T) {
	secret, _ := webhooks.NewSecret()
	m := signed(t, secret, "evt_1")
	lower := nats.Header{}
	table := amqp.Table{}
	for k, v := range m.Header {
		lower[strings.ToLower(k)] = v
		table[strings.ToLower(k)] = v[0]
	}
	if err := client.VerifyWebhook(secret.String(), lower, m.Body); err != nil {
		t.Errorf("NATS headers: %v", err)
	}
	if err := client.VerifyWebhook(secret.String(), table, m.Body); err != nil {
		t.Errorf("AMQP headers: %v", err)
	}
	table["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if err := client.VerifyWebhook(secret.String(), table, m.Body); err == nil {
		t.Error("VerifyWebhook accepted a wrong signature in AMQP headers")
	}
}
