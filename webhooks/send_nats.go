package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsSender publishes messages to NATS JetStream. An attempt succeeds only
// on the stream's publish acknowledgement (a duplicate the stream dropped
// counts: the stream has the message); no stream for the subject, an error
// from the stream, or no acknowledgement within the timeout fail it. Every
// message carries Nats-Msg-Id: <webhook-id>, so that the stream drops the
// copy a retry sends after a lost acknowledgement, within its duplicate
// window (two minutes by default).
//
// It keeps one connection per URL (credentials and host: the URL without
// its query), shared by the deliveries in flight. The client reconnects by
// itself after a broker restart; a connection that ended for good is
// dialled again by the next attempt; one unused for
// DelivererConfig.BrokerIdle is closed.
type natsSender struct {
	guard   *Guard
	timeout time.Duration
	pool    *connPool[*natsConn]
}

func newNATSSender(cfg DelivererConfig) *natsSender {
	s := &natsSender{guard: cfg.Guard, timeout: cfg.Timeout}
	s.pool = newConnPool(cfg.BrokerIdle, func(url string) *natsConn { return &natsConn{url: url, mu: newConnMutex()} })
	return s
}

// natsConn is one pooled connection.
type natsConn struct {
	url string

	mu connMutex // guards nc and js
	nc *nats.Conn
	js jetstream.JetStream
}

// Close closes every pooled connection.
func (s *natsSender) Close() { s.pool.Close() }

// Send publishes m to dest's subject and waits for the stream's ack.
func (s *natsSender) Send(ctx context.Context, dest *url.URL, m *Message) Sent {
	t, err := parseTarget(dest)
	if err != nil {
		return Sent{Err: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	slot := s.pool.acquire(connURL(dest))
	defer s.pool.release(slot)
	js, err := slot.e.jetStream(ctx, s)
	if err != nil {
		return Sent{Err: "nats: connect: " + describeNATS(err, s.timeout)}
	}
	msg := &nats.Msg{Subject: t.subject, Data: m.Body, Header: nats.Header{}}
	for k, v := range m.Header {
		msg.Header[strings.ToLower(k)] = v
	}
	msg.Header.Set(jetstream.MsgIDHeader, m.ID)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return Sent{Err: fmt.Sprintf("nats: no acknowledgement within %s", s.timeout)}
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return Sent{Err: fmt.Sprintf("nats: no responders / no stream for subject %q", t.subject)}
		}
		return Sent{Err: describeNATS(err, s.timeout)}
	}
	return Sent{}
}

// jetStream returns the connection's JetStream context, dialling when the
// connection is new or ended for good.
func (c *natsConn) jetStream(ctx context.Context, s *natsSender) (jetstream.JetStream, error) {
	if err := c.mu.LockContext(ctx); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if c.nc != nil && !c.nc.IsClosed() {
		return c.js, nil
	}
	nc, err := nats.Connect(c.url,
		nats.Name("asyncgate webhooks"),
		// The first connect ends with the attempt (it starts at the
		// attempt's start, so reconnects get about the whole timeout).
		nats.Timeout(remaining(ctx, s.timeout)),
		nats.SetCustomDialer(guardDialer{s.guard, s.timeout}),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// No logging of asynchronous errors: the attempts say what fails.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.nc, c.js = nc, js
	return js, nil
}

func (c *natsConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		c.nc.Close()
	}
	c.nc, c.js = nil, nil
}

// guardDialer dials NATS servers through the Guard.
type guardDialer struct {
	g       *Guard
	timeout time.Duration
}

func (d guardDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return d.g.DialContext(ctx, network, addr)
}

// describeNATS says what went wrong; the library's errors already start
// with "nats: ".
func describeNATS(err error, timeout time.Duration) string {
	if errors.Is(err, ErrURLNotAllowed) {
		return describe(err, timeout)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "nats: ") {
		msg = "nats: " + msg
	}
	return msg
}

// remaining is the time left before ctx's deadline, at most d, at least a
// millisecond.
func remaining(ctx context.Context, d time.Duration) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(deadline))
	}
	return max(d, time.Millisecond)
}
