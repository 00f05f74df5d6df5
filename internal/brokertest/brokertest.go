// Package brokertest gives tests the real message brokers that broker
// destinations publish to: RabbitMQ and NATS with JetStream.
//
// The brokers are the machine's (`make test` starts them when they are not
// running: see brokers.sh): RabbitMQ at ASYNCGATE_TEST_AMQP_URL, by default
// amqp://guest:guest@127.0.0.1:5672/, and NATS at ASYNCGATE_TEST_NATS_URL,
// else the URL brokers.sh wrote to $TMPDIR/asyncgate-test-nats.url, else
// nats://127.0.0.1:4222. A test that cannot reach one is skipped, saying
// which and how to start it; every test gets its own exchange and queue, or
// its own stream and subject, so tests never see each other's messages.
package brokertest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQPURL is the RabbitMQ the tests use.
func AMQPURL() string {
	if u := os.Getenv("ASYNCGATE_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// NATSURL is the NATS server the tests use.
func NATSURL() string {
	if u := os.Getenv("ASYNCGATE_TEST_NATS_URL"); u != "" {
		return u
	}
	if b, err := os.ReadFile(filepath.Join(os.TempDir(), "asyncgate-test-nats.url")); err == nil {
		if u := strings.TrimSpace(string(b)); u != "" && reachable(u) {
			return u
		}
	}
	return "nats://127.0.0.1:4222"
}

func reachable(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var seq atomic.Int64

// Name returns a name no other test uses, for exchanges, queues, streams
// and subjects.
func Name(prefix string) string {
	return fmt.Sprintf("%s-%d-%s", prefix, seq.Add(1), uuid.NewString()[:8])
}

// Rabbit is a connection to the test RabbitMQ. Its channel is opened
// again when a test closed it (CloseAllConnections).
type Rabbit struct {
	URL string
	// VHostName is the vhost of the test's own, if VHost made it.
	VHostName string

	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

// Ch returns an open channel, connecting again if needed.
func (r *Rabbit) Ch(t testing.TB) *amqp.Channel {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch != nil && !r.ch.IsClosed() {
		return r.ch
	}
	if r.conn == nil || r.conn.IsClosed() {
		conn, err := amqp.DialConfig(r.URL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err != nil {
			t.Fatalf("brokertest: connect to RabbitMQ again: %v", err)
		}
		r.conn = conn
	}
	ch, err := r.conn.Channel()
	if err != nil {
		t.Fatalf("brokertest: open channel: %v", err)
	}
	r.ch = ch
	return ch
}

// RabbitMQ connects to the test RabbitMQ, or skips the test.
func RabbitMQ(t testing.TB) *Rabbit {
	t.Helper()
	u := AMQPURL()
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Skipf("brokertest: RabbitMQ at %s cannot be reached (%v): run `make brokers` (rabbitmq-server -detached) or set ASYNCGATE_TEST_AMQP_URL", redact(u), err)
	}
	r := &Rabbit{URL: u, conn: conn}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.conn.Close()
	})
	return r
}

// Exchange declares a new topic exchange and a queue bound to it for every
// routing key, both deleted when the test ends; it returns their names.
func (r *Rabbit) Exchange(t testing.TB) (exchange, queue string) {
	t.Helper()
	exchange = Name("ex")
	r.Declare(t, exchange)
	queue = r.Queue(t, exchange, "#")
	return exchange, queue
}

// Declare declares a durable topic exchange, deleted when the test ends.
func (r *Rabbit) Declare(t testing.TB, exchange string) {
	t.Helper()
	if err := r.Ch(t).ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("brokertest: declare exchange: %v", err)
	}
	t.Cleanup(func() { _ = r.Ch(t).ExchangeDelete(exchange, false, false) })
}

// Queue declares a durable queue bound to exchange with key, deleted when
// the test ends.
func (r *Rabbit) Queue(t testing.TB, exchange, key string) string {
	t.Helper()
	q := Name("q")
	if _, err := r.Ch(t).QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatalf("brokertest: declare queue: %v", err)
	}
	t.Cleanup(func() { _, _ = r.Ch(t).QueueDelete(q, false, false, false) })
	if err := r.Ch(t).QueueBind(q, key, exchange, false, nil); err != nil {
		t.Fatalf("brokertest: bind queue: %v", err)
	}
	return q
}

// Drain takes every message in queue now, acknowledging them.
func (r *Rabbit) Drain(t testing.TB, queue string) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	for {
		d, ok, err := r.Ch(t).Get(queue, true)
		if err != nil {
			t.Fatalf("brokertest: get from %s: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// DestURL is the destination URL of exchange on the test broker, with
// extra query parameters.
func (r *Rabbit) DestURL(exchange string, extra ...string) string {
	u, _ := url.Parse(r.URL)
	q := url.Values{"exchange": {exchange}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// rabbitmqctl runs rabbitmqctl, skipping the test when it cannot.
func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput(); err != nil {
		t.Skipf("brokertest: rabbitmqctl %s: %v: %s", args[0], err, out)
	}
}

// VHost adds a vhost of the test's own, open to the test user and deleted
// when the test ends, and returns a connection to it: a test that closes
// connections (CloseAllConnections) closes only those to its vhost.
func (r *Rabbit) VHost(t testing.TB) *Rabbit {
	t.Helper()
	vhost := Name("vh")
	u, _ := url.Parse(r.URL)
	rabbitmqctl(t, "add_vhost", vhost)
	t.Cleanup(func() { rabbitmqctl(t, "delete_vhost", vhost) })
	rabbitmqctl(t, "set_permissions", "-p", vhost, u.User.Username(), ".*", ".*", ".*")
	u.Path, u.RawPath = "/"+vhost, ""
	conn, err := amqp.DialConfig(u.String(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("brokertest: connect to vhost %s: %v", vhost, err)
	}
	v := &Rabbit{URL: u.String(), conn: conn, VHostName: vhost}
	t.Cleanup(func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.conn.Close()
	})
	return v
}

// CloseAllConnections has RabbitMQ close every client connection to the
// vhost, as a broker restart would (rabbitmqctl close_all_connections).
func (r *Rabbit) CloseAllConnections(t testing.TB) {
	t.Helper()
	if r.VHostName == "" {
		t.Fatal("brokertest: CloseAllConnections needs a vhost of the test's own (Rabbit.VHost): others' tests share the default one")
	}
	rabbitmqctl(t, "close_all_connections", "-p", r.VHostName, "closed by a test")
}

// NATS is a connection to the test NATS server.
type NATS struct {
	URL string
	NC  *nats.Conn
	JS  jetstream.JetStream
}

// JetStream connects to the test NATS server, or skips the test.
func JetStream(t testing.TB) *NATS {
	t.Helper()
	u := NATSURL()
	nc, err := nats.Connect(u, nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		t.Skipf("brokertest: NATS at %s cannot be reached (%v): run `make brokers` (nats-server -js) or set ASYNCGATE_TEST_NATS_URL", redact(u), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("brokertest: jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Skipf("brokertest: NATS at %s has no JetStream (%v): start it with nats-server -js", redact(u), err)
	}
	return &NATS{URL: u, NC: nc, JS: js}
}

// Stream creates a stream of its own subject, deleted when the test ends,
// and returns it with the subject.
func (n *NATS) Stream(t testing.TB) (jetstream.Stream, string) {
	t.Helper()
	name := strings.ReplaceAll(Name("st"), "-", "_")
	subject := "asyncgate.test." + name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.JS.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("brokertest: create stream: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.JS.DeleteStream(ctx, name)
	})
	return st, subject
}

// DestURL is the destination URL of subject on the test server.
func (n *NATS) DestURL(subject string) string {
	u, _ := url.Parse(n.URL)
	u.RawQuery = url.Values{"subject": {subject}}.Encode()
	return u.String()
}

// Messages reads every message of the stream, oldest first.
func Messages(t testing.TB, st jetstream.Stream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("brokertest: stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("brokertest: get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "***")
	}
	return u.String()
}

// User adds a RabbitMQ user with a password of its own, allowed everything
// on the default vhost, deleted when the test ends, and returns the URL of
// exchange on the test broker as that user, with the password apart, so
// that a test can look for the password where it must not be.
func (r *Rabbit) User(t testing.TB, exchange string) (destURL, password string) {
	t.Helper()
	user := Name("user")
	password = "pw-" + uuid.NewString()
	rabbitmqctl(t, "add_user", user, password)
	t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
	rabbitmqctl(t, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
	u, _ := url.Parse(r.DestURL(exchange))
	u.User = url.UserPassword(user, password)
	return u.String(), password
}
