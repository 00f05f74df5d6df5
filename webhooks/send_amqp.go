package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpSender publishes messages to RabbitMQ exchanges: persistent
// (delivery mode 2), mandatory, on a channel in confirm mode. An attempt
// succeeds only on the broker's ack; a nack, a returned (unroutable)
// message, a closed channel (a missing exchange: 404 NOT_FOUND), a refused
// login or no confirm within the timeout fail it, with that reason.
//
// It keeps one connection per broker URL (credentials, host, vhost: the
// URL without its query), and on it one confirm channel per exchange, so
// that an exchange that is missing, which closes its channel, cannot fail
// the publishes to another. Deliveries in flight share them. A connection
// found closed (a broker restart, close_all_connections) is dialled again
// by the next attempt; one unused for DelivererConfig.BrokerIdle is closed.
type amqpSender struct {
	guard   *Guard
	timeout time.Duration
	pool    *connPool[*amqpConn]
}

func newAMQPSender(cfg DelivererConfig) *amqpSender {
	s := &amqpSender{guard: cfg.Guard, timeout: cfg.Timeout}
	s.pool = newConnPool(cfg.BrokerIdle, func(url string) *amqpConn {
		return &amqpConn{url: url, mu: newConnMutex(), chans: map[string]*confirmChan{}}
	})
	return s
}

// amqpConn is one pooled connection and its confirm channels.
type amqpConn struct {
	url string

	mu    connMutex // guards conn and chans
	conn  *amqp.Connection
	chans map[string]*confirmChan
}

// confirmChan is a channel in confirm mode, publishing to one exchange.
type confirmChan struct {
	ch      *amqp.Channel
	closes  chan *amqp.Error
	returns chan amqp.Return

	mu       sync.Mutex
	closeErr *amqp.Error
	pending  map[string]int  // message id → publishes waiting for their confirm
	returned map[string]bool // message ids the broker returned, among pending
}

// Close closes every pooled connection.
func (s *amqpSender) Close() { s.pool.Close() }

// Send publishes m to dest's exchange and waits for the broker's confirm.
func (s *amqpSender) Send(ctx context.Context, dest *url.URL, m *Message) Sent {
	t, err := parseTarget(dest)
	if err != nil {
		return Sent{Err: err.Error()}
	}
	key := t.routingKey
	if key == "" {
		key = m.Type
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	slot := s.pool.acquire(connURL(dest))
	defer s.pool.release(slot)
	c := slot.e
	cc, err := c.channel(ctx, s, t.exchange)
	if err != nil {
		return Sent{Err: describeAMQP(err, s.timeout)}
	}

	headers := amqp.Table{}
	for k, v := range m.Header {
		if len(v) > 0 {
			headers[strings.ToLower(k)] = v[0]
		}
	}
	cc.mu.Lock()
	cc.pending[m.ID]++
	cc.mu.Unlock()
	defer cc.done(m.ID)
	dc, err := cc.ch.PublishWithDeferredConfirmWithContext(ctx, t.exchange, key, true, false, amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Timestamp:    m.Timestamp,
		Type:         m.Type,
		AppId:        "asyncgate",
		Body:         m.Body,
	})
	if err != nil {
		c.drop(cc, t.exchange)
		return Sent{Err: "amqp: publish: " + describeAMQP(cc.reason(err), s.timeout)}
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Sent{Err: fmt.Sprintf("amqp: no confirm within %s", s.timeout)}
		}
		return Sent{Err: "amqp: " + context.Cause(ctx).Error()}
	}
	// A returned message comes before its ack, on the same channel, and
	// the library hands it to our buffered channel before it reads the
	// ack: draining now sees it.
	if ret, ok := cc.wasReturned(m.ID); ok {
		return Sent{Err: ret}
	}
	if dc.Acked() {
		return Sent{}
	}
	// A nack, or the channel closed under the publish (a missing exchange,
	// a lost connection): the close says which.
	c.drop(cc, t.exchange)
	if e := cc.waitClose(ctx); e != nil {
		return Sent{Err: "amqp: " + describeAMQP(e, s.timeout)}
	}
	return Sent{Err: "amqp: the broker refused the message (nack)"}
}

// channel returns the open confirm channel for exchange, dialling and
// opening what is closed.
func (c *amqpConn) channel(ctx context.Context, s *amqpSender, exchange string) (*confirmChan, error) {
	if err := c.mu.LockContext(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer c.mu.Unlock()
	if cc := c.chans[exchange]; cc != nil && !cc.ch.IsClosed() && c.conn != nil && !c.conn.IsClosed() {
		return cc, nil
	}
	if c.conn == nil || c.conn.IsClosed() {
		c.chans = map[string]*confirmChan{}
		conn, err := amqp.DialConfig(c.url, amqp.Config{
			// The dial and the handshakes are the attempt's: they end with
			// its context (the library dials only here, never later).
			Dial: func(network, addr string) (net.Conn, error) {
				conn, err := s.guard.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				// Bound the TLS and AMQP handshakes; the library clears
				// the deadline once the connection is open.
				deadline, ok := ctx.Deadline()
				if !ok {
					deadline = time.Now().Add(s.timeout)
				}
				if err := conn.SetDeadline(deadline); err != nil {
					conn.Close()
					return nil, err
				}
				return conn, nil
			},
			Properties: amqp.Table{"connection_name": "asyncgate webhooks"},
		})
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		c.conn = conn
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	cc := &confirmChan{ch: ch, closes: ch.NotifyClose(make(chan *amqp.Error, 1)),
		returns: ch.NotifyReturn(make(chan amqp.Return, 1024)), pending: map[string]int{}, returned: map[string]bool{}}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	c.chans[exchange] = cc
	return cc, nil
}

// drop forgets cc if it is still exchange's channel and is closed, so that
// the next attempt opens another.
func (c *amqpConn) drop(cc *confirmChan, exchange string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chans[exchange] == cc && cc.ch.IsClosed() {
		delete(c.chans, exchange)
	}
}

func (c *amqpConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close() // closing: nothing to do with an error
	}
	c.conn, c.chans = nil, map[string]*confirmChan{}
}

// drainLocked moves the returned messages waiting in cc.returns into
// cc.returned, for the publishes still waiting. Call with cc.mu held.
func (cc *confirmChan) drainLocked() {
	for {
		select {
		case r, ok := <-cc.returns:
			if !ok {
				return
			}
			if cc.pending[r.MessageId] > 0 {
				cc.returned[r.MessageId] = true
			}
		default:
			return
		}
	}
}

// wasReturned reports whether the broker returned message id, and why.
func (cc *confirmChan) wasReturned(id string) (string, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.drainLocked()
	if !cc.returned[id] {
		return "", false
	}
	return "amqp: the broker returned the message as unroutable (NO_ROUTE: no queue is bound to the exchange for its routing key)", true
}

// done ends the wait of one publish of message id.
func (cc *confirmChan) done(id string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.drainLocked()
	if cc.pending[id]--; cc.pending[id] <= 0 {
		delete(cc.pending, id)
		delete(cc.returned, id)
	}
}

// waitClose returns why the channel closed, waiting a moment for the
// library to say; nil when it did not close.
func (cc *confirmChan) waitClose(ctx context.Context) *amqp.Error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closeErr != nil {
		return cc.closeErr
	}
	if !cc.ch.IsClosed() {
		return nil
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case e, ok := <-cc.closes:
		if ok && e != nil {
			cc.closeErr = e
		}
	case <-t.C:
	case <-ctx.Done():
	}
	return cc.closeErr
}

// reason is err, or the channel's close reason when it has one.
func (cc *confirmChan) reason(err error) error {
	if errors.Is(err, amqp.ErrClosed) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		select {
		case e, ok := <-cc.closes:
			if ok && e != nil {
				cc.closeErr = e
			}
		default:
		}
		if cc.closeErr != nil {
			return cc.closeErr
		}
	}
	return err
}

// describeAMQP says what went wrong, in the broker's words when it gave
// some ("NOT_FOUND - no exchange 'x' in vhost '/'").
func describeAMQP(err error, timeout time.Duration) string {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		msg := ae.Reason
		if msg == "" {
			msg = ae.Error()
		}
		if prefix, _, ok := strings.Cut(err.Error(), ": "); ok && prefix != "" && !strings.HasPrefix(prefix, "Exception") {
			return prefix + ": " + msg
		}
		return msg
	}
	if errors.Is(err, amqp.ErrSASL) || errors.Is(err, amqp.ErrCredentials) {
		return "connect: " + amqp.ErrCredentials.Error() + " (login refused)"
	}
	return describe(err, timeout)
}
