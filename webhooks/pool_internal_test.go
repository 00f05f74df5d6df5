package webhooks

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/asyncgate/asyncgate/internal/brokertest"
)

func testMessage(id string) *Message {
	body := []byte(`{"id":"` + id + `","type":"order.executed"}`)
	h := Headers(id, time.Now(), body, MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="))
	return &Message{ID: id, Type: "order.executed", Body: body, Header: h, Timestamp: time.Now()}
}

// A pooled AMQP connection is shared, dialled again once closed, and
// closed after BrokerIdle unused.
func TestAMQPPoolReconnectsAndClosesWhenIdle(t *testing.T) {
	t.Parallel()
	r := brokertest.RabbitMQ(t)
	exchange, queue := r.Exchange(t)
	s := newAMQPSender(DelivererConfig{Guard: NewGuard(GuardConfig{AllowPrivate: true}), Timeout: 5 * time.Second, BrokerIdle: 300 * time.Millisecond})
	defer s.Close()
	dest, _ := url.Parse(r.DestURL(exchange))
	send := func(id string) {
		t.Helper()
		if sent := s.Send(context.Background(), dest, testMessage(id)); sent.Err != "" {
			t.Fatalf("send %s: %s", id, sent.Err)
		}
	}
	conn := func() *amqpConn {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		if sl := s.pool.entries[connURL(dest)]; sl != nil {
			return sl.e
		}
		return nil
	}
	send("evt_1")
	send("evt_2")
	c := conn()
	if c == nil || s.pool.size() != 1 {
		t.Fatalf("after two sends the pool holds %d connections", s.pool.size())
	}
	current := func() *amqp.Connection {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn
	}
	first := current()
	first.Close() // as a broker restart would
	send("evt_3")
	second := current()
	if second == first || second.IsClosed() {
		t.Fatal("the closed connection was not replaced")
	}
	deadline := time.Now().Add(10 * time.Second)
	for (s.pool.size() != 0 || !second.IsClosed()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.pool.size() != 0 || !second.IsClosed() {
		t.Fatalf("after the idle time the pool holds %d connections (closed: %v)", s.pool.size(), second.IsClosed())
	}
	send("evt_4") // a new connection
	got := map[string]bool{}
	deadline = time.Now().Add(10 * time.Second)
	for len(got) < 4 && time.Now().Before(deadline) {
		for _, m := range r.Drain(t, queue) {
			got[m.MessageId] = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 4 {
		t.Fatalf("the queue got %v, want 4 messages", got)
	}
}

// A pooled NATS connection is shared, dialled again once closed, and
// closed after BrokerIdle unused.
func TestNATSPoolReconnectsAndClosesWhenIdle(t *testing.T) {
	t.Parallel()
	n := brokertest.JetStream(t)
	st, subject := n.Stream(t)
	s := newNATSSender(DelivererConfig{Guard: NewGuard(GuardConfig{AllowPrivate: true}), Timeout: 5 * time.Second, BrokerIdle: 300 * time.Millisecond})
	defer s.Close()
	dest, _ := url.Parse(n.DestURL(subject))
	send := func(id string) {
		t.Helper()
		if sent := s.Send(context.Background(), dest, testMessage(id)); sent.Err != "" {
			t.Fatalf("send %s: %s", id, sent.Err)
		}
	}
	send("evt_1")
	s.pool.mu.Lock()
	c := s.pool.entries[connURL(dest)].e
	s.pool.mu.Unlock()
	current := func() *nats.Conn {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.nc
	}
	first := current()
	first.Close()
	send("evt_2")
	second := current()
	if second == first || second.IsClosed() {
		t.Fatal("the closed connection was not replaced")
	}
	deadline := time.Now().Add(10 * time.Second)
	for (s.pool.size() != 0 || !second.IsClosed()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.pool.size() != 0 || !second.IsClosed() {
		t.Fatalf("after the idle time the pool holds %d connections", s.pool.size())
	}
	send("evt_2") // again, on a new connection: the stream drops the duplicate
	if msgs := brokertest.Messages(t, st); len(msgs) != 2 {
		t.Fatalf("the stream holds %d messages, want 2", len(msgs))
	}
}

// blackHole accepts connections and never answers: a broker that hangs.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().String()
}

// Attempts to a broker that hangs each end within their own timeout; they
// do not queue behind one another's dial.
func TestBrokerSendersToAHangingBrokerGiveUpInTime(t *testing.T) {
	t.Parallel()
	addr := blackHole(t)
	cfg := DelivererConfig{Guard: NewGuard(GuardConfig{AllowPrivate: true}), Timeout: time.Second, BrokerIdle: time.Minute}
	for _, tt := range []struct {
		name   string
		sender Sender
		url    string
	}{
		{"amqp", newAMQPSender(cfg), "amqp://guest:guest@" + addr + "/?exchange=x"},
		{"nats", newNATSSender(cfg), "nats://" + addr + "?subject=x"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.sender.Close()
			dest, _ := url.Parse(tt.url)
			const n = 8
			start := time.Now()
			errs := make(chan string, n)
			for i := range n {
				go func() { errs <- tt.sender.Send(context.Background(), dest, testMessage(fmt.Sprintf("evt_%d", i))).Err }()
			}
			for range n {
				if e := <-errs; e == "" {
					t.Error("a send to a hanging broker succeeded")
				}
			}
			// One after another they would take n seconds.
			if took := time.Since(start); took > n*time.Second/2 {
				t.Errorf("%d sends with a 1s timeout took %s", n, took)
			}
		})
	}
}

// TestConnMutexGivesUpWithContext: an attempt waiting behind a held
// connection (a slow dial) returns when its own context ends, and locks
// once the holder unlocks.
func TestConnMutexGivesUpWithContext(t *testing.T) {
	m := newConnMutex()
	m.Lock()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := m.LockContext(ctx); err != context.DeadlineExceeded {
		t.Fatalf("LockContext on a held mutex = %v, want %v", err, context.DeadlineExceeded)
	}
	m.Unlock()
	if err := m.LockContext(t.Context()); err != nil {
		t.Fatalf("LockContext on a free mutex = %v", err)
	}
	m.Unlock()
}
