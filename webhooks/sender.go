package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The seam between the delivery pipeline and the wire. The Deliverer does
// everything that is the same for every destination — it loads the
// delivery, signs the body, opens the span, records the attempt, runs the
// breaker and the retry schedule — and hands the signed message to the
// Sender of the URL's scheme, which only carries it:
//
//	https, http   send_http.go   a POST; success is a 2xx answer
//	amqp, amqps   send_amqp.go   a persistent, mandatory publish to a RabbitMQ exchange; success is the broker's confirm
//	nats, tls     send_nats.go   a JetStream publish; success is the stream's acknowledgement

// Message is one signed attempt of a delivery, what a Sender carries.
type Message struct {
	// ID is the webhook-id: the event id, the same on every attempt.
	ID string
	// Type is the event type ("order.executed").
	Type string
	// Body is the event as stored and signed, byte for byte.
	Body []byte
	// Header holds webhook-id, webhook-timestamp, webhook-signature,
	// Content-Type, and the attempt span's traceparent when traced. A
	// sender copies every one of them into its message.
	Header http.Header
	// Timestamp is when the attempt was signed (webhook-timestamp).
	Timestamp time.Time
}

// Sent is what a Sender says of one attempt.
type Sent struct {
	// Err says why the attempt failed, as the attempt log shows it; empty
	// on success. It must hold no credential.
	Err string
	// StatusCode is an HTTP receiver's status; 0 for brokers.
	StatusCode int
	// Response is the start of an HTTP receiver's answer.
	Response string
	// ResponseTruncated: Response is cut.
	ResponseTruncated bool
	// RetryAfter is a wait the receiver asked for (HTTP 429 and 503).
	RetryAfter time.Duration
	// Header is an HTTP receiver's response header (for endpoint tests).
	Header http.Header
}

// Sender carries signed messages to the destinations of some URL schemes.
// Send makes one attempt to dest (a URL the Guard accepted at registration;
// the sender checks it again) and never returns before the destination
// took the message, refused it, or ctx ended. Connections it keeps are
// its own; Close drops them. A Sender is safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, dest *url.URL, m *Message) Sent
	Close()
}

// senderFor returns the sender of dest's scheme.
func (d *Deliverer) senderFor(scheme string) Sender {
	switch scheme {
	case "amqp", "amqps":
		return d.senders.amqp
	case "nats", "tls":
		return d.senders.nats
	}
	return d.senders.http
}

// senders are the deliverer's, one per kind of destination.
type senders struct {
	http, amqp, nats Sender
}

func (s senders) close() {
	s.http.Close()
	s.amqp.Close()
	s.nats.Close()
}

// isBrokerScheme reports whether scheme names a broker destination.
func isBrokerScheme(scheme string) bool {
	switch scheme {
	case "amqp", "amqps", "nats", "tls":
		return true
	}
	return false
}

// MaskURL returns raw with the credential it may hold replaced by "***":
// the password of user:password, or a lone user name (a NATS token) of a
// broker URL. The API, the dashboard and the logs show URLs only so. Text
// that does not parse is returned as "***" when it holds an "@" (it may
// hold a credential), else unchanged.
func MaskURL(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if err != nil {
			return "***"
		}
		return raw
	}
	user := u.User
	var masked string
	if _, ok := user.Password(); ok {
		masked = url.User(user.Username()).String() + ":***@"
	} else if u.Scheme == "nats" || u.Scheme == "tls" || !isBrokerScheme(u.Scheme) {
		// A NATS user without a password is a token; an http(s) user info is
		// refused at registration but may come from elsewhere.
		masked = "***@"
	} else {
		return raw
	}
	// Written by hand: url.URL.String would escape the asterisks.
	u.User = nil
	rest := strings.TrimPrefix(u.String(), u.Scheme+"://")
	return u.Scheme + "://" + masked + rest
}

// redactURL removes what the URL u holds as credentials from the text s,
// the last line of defence for an error message a library built.
func redactURL(s string, u *url.URL) string {
	if u == nil || u.User == nil {
		return s
	}
	if p, ok := u.User.Password(); ok && p != "" {
		s = strings.ReplaceAll(s, p, "***")
		if e := url.QueryEscape(p); e != p {
			s = strings.ReplaceAll(s, e, "***")
		}
	} else if n := u.User.Username(); n != "" && (u.Scheme == "nats" || u.Scheme == "tls") {
		s = strings.ReplaceAll(s, n, "***")
	}
	return s
}

// connURL is dest without its query and fragment: what a broker sender
// dials, and the key of its connection pool. The query holds asyncgate's
// own parameters (exchange, subject); passing it on would let a tenant set
// the client library's options (amqp091 reads certificate file names from
// it).
func connURL(dest *url.URL) string {
	c := *dest
	c.RawQuery, c.Fragment, c.RawFragment, c.ForceQuery = "", "", "", false
	return c.String()
}

// eventType reads the type of a stored event body.
func eventType(body []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev) // the body is ours; an unreadable one has no type
	return ev.Type
}

// target is where in its broker a destination URL points.
type target struct {
	exchange, routingKey string // amqp, amqps; an empty routingKey means the event type
	subject              string // nats, tls
}

// parseTarget reads a broker URL's own parameters and checks its shape:
//
//	amqp://user:pass@host:5672/vhost?exchange=NAME[&routing_key=KEY]   (and amqps)
//	nats://[user:pass@ | token@]host:4222?subject=SUBJECT               (and tls)
//
// Other parameters are refused, not ignored: none reaches the client
// library. Errors wrap ErrInvalidURL and never repeat the URL.
func parseTarget(u *url.URL) (target, error) {
	var t target
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return t, fmt.Errorf("%w: its query does not parse", ErrInvalidURL)
	}
	one := func(name string) (string, error) {
		v := q[name]
		if len(v) > 1 {
			return "", fmt.Errorf("%w: %s is given twice", ErrInvalidURL, name)
		}
		if len(v) == 0 {
			return "", nil
		}
		return v[0], nil
	}
	allowed := []string{"subject"}
	switch u.Scheme {
	case "amqp", "amqps":
		allowed = []string{"exchange", "routing_key"}
		if t.exchange, err = one("exchange"); err != nil {
			return t, err
		}
		if t.routingKey, err = one("routing_key"); err != nil {
			return t, err
		}
		switch {
		case t.exchange == "":
			return t, fmt.Errorf("%w: an %s URL needs ?exchange=NAME (the exchange to publish to)", ErrInvalidURL, u.Scheme)
		case len(t.exchange) > 255 || !validAMQPName(t.exchange):
			return t, fmt.Errorf("%w: exchange must be at most 255 letters, digits, '-', '_', '.' or ':'", ErrInvalidURL)
		case len(t.routingKey) > 255 || !utf8.ValidString(t.routingKey):
			return t, fmt.Errorf("%w: routing_key must be at most 255 bytes of UTF-8", ErrInvalidURL)
		}
		if strings.Contains(strings.TrimPrefix(u.EscapedPath(), "/"), "/") {
			return t, fmt.Errorf("%w: the path is the vhost, one segment (write / inside it as %%2F)", ErrInvalidURL)
		}
		if _, err := amqp.ParseURI(connURL(u)); err != nil {
			return t, fmt.Errorf("%w: not a valid %s URL (host, port, user, vhost)", ErrInvalidURL, u.Scheme)
		}
	case "nats", "tls":
		if t.subject, err = one("subject"); err != nil {
			return t, err
		}
		switch {
		case t.subject == "":
			return t, fmt.Errorf("%w: a %s URL needs ?subject=SUBJECT (a subject of a JetStream stream)", ErrInvalidURL, u.Scheme)
		case !validSubject(t.subject):
			return t, fmt.Errorf("%w: subject must be at most 255 bytes of dot-separated tokens, without spaces or the wildcards * and >", ErrInvalidURL)
		}
		if u.Path != "" && u.Path != "/" {
			return t, fmt.Errorf("%w: a %s URL has no path", ErrInvalidURL, u.Scheme)
		}
	}
	for k := range q {
		if !slices.Contains(allowed, k) {
			return t, fmt.Errorf("%w: unknown parameter %q; %s URLs take %s", ErrInvalidURL, k, u.Scheme, strings.Join(allowed, " and "))
		}
	}
	return t, nil
}

func validAMQPName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func validSubject(s string) bool {
	if len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// NewAMQPSender returns the Sender of amqp and amqps URLs that a Deliverer
// uses by default, configured by cfg's Guard (default: the strict guard),
// Timeout and BrokerIdle, for callers that wrap it (DelivererConfig.AMQP).
func NewAMQPSender(cfg DelivererConfig) Sender { return newAMQPSender(cfg.senderDefaults()) }

// NewNATSSender returns the Sender of nats and tls URLs that a Deliverer
// uses by default; see NewAMQPSender.
func NewNATSSender(cfg DelivererConfig) Sender { return newNATSSender(cfg.senderDefaults()) }

func (c DelivererConfig) senderDefaults() DelivererConfig {
	if c.Guard == nil {
		c.Guard = NewGuard(GuardConfig{})
	}
	if c.Timeout == 0 {
		c.Timeout = 15 * time.Second
	}
	if c.BrokerIdle == 0 {
		c.BrokerIdle = 2 * time.Minute
	}
	return c
}
