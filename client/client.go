package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

// Defaults of the retry policy (see WithRetry).
const (
	DefaultMaxAttempts   = 5
	DefaultBackoffBase   = 200 * time.Millisecond
	DefaultMaxRetryAfter = 30 * time.Second
	// pollWait is the wait of each long-poll of WaitForOrder.
	pollWait = "30s"
	// maxBody bounds what is read of an answer.
	maxBody = 8 << 20
)

// Client talks to one asyncgate API with one API key. It is safe for
// concurrent use.
type Client struct {
	raw           *ClientWithResponses
	maxAttempts   int
	backoffBase   time.Duration
	maxRetryAfter time.Duration
}

// Option configures a Client.
type Option func(*options)

type options struct {
	http          HttpRequestDoer
	maxAttempts   int
	backoffBase   time.Duration
	maxRetryAfter time.Duration
	userAgent     string
}

// WithHTTPDoer sets the HTTP client (http.DefaultClient by default). It must
// not time requests out before WaitForOrder's 30 s long-polls end.
// (WithHTTPClient is the generated option of the low-level client.)
func WithHTTPDoer(c HttpRequestDoer) Option { return func(o *options) { o.http = c } }

// WithRetry sets the retry policy: at most maxAttempts attempts per call (1
// disables retries), an exponential backoff from backoffBase when the server
// gave no Retry-After, and at most maxRetryAfter of waiting for one
// Retry-After (a longer one is not waited for: the call fails with the
// problem). Zero values keep the defaults.
func WithRetry(maxAttempts int, backoffBase, maxRetryAfter time.Duration) Option {
	return func(o *options) {
		if maxAttempts > 0 {
			o.maxAttempts = maxAttempts
		}
		if backoffBase > 0 {
			o.backoffBase = backoffBase
		}
		if maxRetryAfter > 0 {
			o.maxRetryAfter = maxRetryAfter
		}
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// New returns a Client for the API at baseURL (such as
// "https://asyncgate.example.com", or one with a path prefix where a proxy
// serves the API) that authenticates with apiKey. A base URL without an
// http(s) scheme and a host is refused; one ending in /v1 is taken as the
// API's root (the client adds /v1 itself).
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	base, err := normalizeBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if apiKey == "" {
		return nil, errors.New("client: empty API key")
	}
	o := options{http: http.DefaultClient, maxAttempts: DefaultMaxAttempts,
		backoffBase: DefaultBackoffBase, maxRetryAfter: DefaultMaxRetryAfter}
	for _, opt := range opts {
		opt(&o)
	}
	auth := "Bearer " + apiKey
	raw, err := NewClientWithResponses(base, WithHTTPClient(o.http),
		WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", auth)
			if o.userAgent != "" {
				req.Header.Set("User-Agent", o.userAgent)
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Client{raw: raw, maxAttempts: o.maxAttempts, backoffBase: o.backoffBase,
		maxRetryAfter: o.maxRetryAfter}, nil
}

// normalizeBaseURL checks a base URL and drops a trailing /v1, which every
// path of the API already starts with.
func normalizeBaseURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("client: empty base URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("client: base URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("client: base URL %q needs a scheme and a host, such as https://asyncgate.example.com", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("client: base URL %q may not have a query or fragment", s)
	}
	u.Path = strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/v1")
	u.RawPath = ""
	return u.String(), nil
}

// Raw is the generated client underneath, for the endpoints this layer does
// not wrap (webhook endpoints, portfolios, admin). It sends the API key but
// neither retries nor turns problems into errors.
func (c *Client) Raw() *ClientWithResponses { return c.raw }

// Error makes a Problem an error: every answer that is not a success comes
// back as a *Problem, to be examined with errors.As.
func (p *Problem) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "asyncgate: %d", p.Status)
	if p.Code != "" {
		fmt.Fprintf(&b, " %s", p.Code)
	}
	switch {
	case p.Detail != nil && *p.Detail != "":
		fmt.Fprintf(&b, ": %s", *p.Detail)
	case p.Title != "":
		fmt.Fprintf(&b, ": %s", p.Title)
	}
	if p.Errors != nil {
		for _, fe := range *p.Errors {
			if j, err := json.Marshal(fe); err == nil {
				fmt.Fprintf(&b, "; %s", j)
			}
		}
	}
	if p.RequestId != nil && *p.RequestId != "" {
		fmt.Fprintf(&b, " (request %s)", *p.RequestId)
	}
	return b.String()
}

// IsTerminal reports whether an order in status s can no longer change.
func (s OrderStatus) IsTerminal() bool {
	switch s {
	case OrderStatusExecuted, OrderStatusRejected, OrderStatusFailed, OrderStatusCancelled:
		return true
	}
	return false
}

// PlaceOrder places an order and returns it as accepted (status pending).
// It sends an Idempotency-Key of its own, the same on every retry, so a
// retry after a lost answer never places a second order.
func (c *Client) PlaceOrder(ctx context.Context, req OrderRequest) (*Order, error) {
	key := newIdempotencyKey()
	params := &PlaceOrderParams{IdempotencyKey: &key}
	var o Order
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.PlaceOrder(ctx, params, req)
	}, &o)
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// GetOrder returns the order with this id.
func (c *Client) GetOrder(ctx context.Context, id OrderId) (*Order, error) {
	return c.getOrder(ctx, id, nil)
}

func (c *Client) getOrder(ctx context.Context, id OrderId, wait *string) (*Order, error) {
	var o Order
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.GetOrder(ctx, id, &GetOrderParams{Wait: wait})
	}, &o)
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// WaitForOrder returns the order once it is terminal (executed, rejected,
// failed or cancelled), long-polling the server 30 s at a time. Bound it
// with ctx.
func (c *Client) WaitForOrder(ctx context.Context, id OrderId) (*Order, error) {
	wait := pollWait
	for {
		o, err := c.getOrder(ctx, id, &wait)
		if err != nil {
			return nil, err
		}
		if o.Status.IsTerminal() {
			return o, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// CancelOrder asks for the order to be cancelled and returns it. An order
// that can no longer be cancelled answers a *Problem with status 409 and
// code too_late.
func (c *Client) CancelOrder(ctx context.Context, id OrderId) (*Order, error) {
	key := newIdempotencyKey()
	params := &CancelOrderParams{IdempotencyKey: &key}
	var o Order
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.CancelOrder(ctx, id, params)
	}, &o)
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// Events returns the order's event log, oldest first.
func (c *Client) Events(ctx context.Context, id OrderId) ([]Event, error) {
	var l EventList
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.ListOrderEvents(ctx, id, nil)
	}, &l)
	if err != nil {
		return nil, err
	}
	return l.Data, nil
}

// OrderFilter narrows Orders. Its zero value lists every order.
type OrderFilter struct {
	// Status, if set, keeps only the orders currently in it.
	Status OrderStatus
	// PageSize is the number of orders per request; the server's default if 0.
	PageSize int
}

// Orders iterates over the tenant's orders, newest first, fetching page after
// page. An error is yielded once, with a zero Order, and ends the iteration.
func (c *Client) Orders(ctx context.Context, filter OrderFilter) iter.Seq2[Order, error] {
	return func(yield func(Order, error) bool) {
		params := ListOrdersParams{}
		if filter.Status != "" {
			params.Status = &filter.Status
		}
		if filter.PageSize > 0 {
			params.Limit = &filter.PageSize
		}
		for {
			var page OrderList
			p := params
			err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
				return c.raw.ClientInterface.ListOrders(ctx, &p)
			}, &page)
			if err != nil {
				yield(Order{}, err)
				return
			}
			for _, o := range page.Data {
				if !yield(o, nil) {
					return
				}
			}
			if page.NextCursor == nil || *page.NextCursor == "" || len(page.Data) == 0 {
				return
			}
			cursor := *page.NextCursor
			params.Cursor = &cursor
		}
	}
}

// WebhookHeader is what VerifyWebhook reads the signature headers from: an
// HTTP request's http.Header, a NATS message's nats.Header (both
// map[string][]string), or a RabbitMQ delivery's amqp.Table
// (map[string]any, string values). Names are matched in any case.
type WebhookHeader interface {
	~map[string][]string | ~map[string]any
}

// VerifyWebhook checks an event that asyncgate delivered to you, as a
// webhook or as a message on your broker: key is the endpoint's or
// callback secret ("whsec_…"), whose "v1" signatures it checks, or a "v1a"
// endpoint's public key ("whpk_…", its public_key), whose ed25519 "v1a"
// signatures it checks; header is the request's or message's headers and
// body its raw bytes. It returns nil when a signature matches and the
// timestamp is within webhooks.DefaultTolerance of now.
//
//	err := client.VerifyWebhook(secret, r.Header, body)          // net/http
//	err := client.VerifyWebhook(secret, msg.Headers, msg.Body)   // amqp091-go Delivery
//	err := client.VerifyWebhook(secret, msg.Headers(), msg.Data()) // nats.go jetstream.Msg
func VerifyWebhook[H WebhookHeader](key string, header H, body []byte) error {
	if k := strings.TrimSpace(key); strings.HasPrefix(k, webhooks.PublicKeyPrefix) {
		pub, err := webhooks.ParsePublicKey(k)
		if err != nil {
			return err
		}
		return webhooks.VerifyPublicKey(pub, httpHeader(header), body, webhooks.DefaultTolerance)
	}
	s, err := webhooks.ParseSecret(key)
	if err != nil {
		return err
	}
	return webhooks.Verify(s, httpHeader(header), body, webhooks.DefaultTolerance)
}

// httpHeader copies h into an http.Header with canonical names: broker
// headers arrive with lower-case names, and AMQP's as a table of values.
func httpHeader[H WebhookHeader](h H) http.Header {
	out := make(http.Header, len(h))
	it := reflect.ValueOf(h).MapRange()
	for it.Next() {
		k := http.CanonicalHeaderKey(it.Key().String())
		switch v := it.Value().Interface().(type) {
		case []string:
			out[k] = append(out[k], v...)
		case string:
			out[k] = append(out[k], v)
		case []byte:
			out[k] = append(out[k], string(v))
		}
	}
	return out
}

// call sends a request with send, retrying it as the policy allows, and
// decodes a successful answer into out. keyed says the request carries an
// Idempotency-Key, which makes a retry after 409 idempotency_key_in_use
// safe. Only transient failures are retried: connection errors, 429, 502,
// 503 and 504 (after their Retry-After when they give one); every other
// answer, such as a 400 or a 404, comes back at once. Every request is safe
// to retry: GETs by nature, POSTs thanks to their Idempotency-Key.
func (c *Client) call(ctx context.Context, keyed bool, send func(context.Context) (*http.Response, error), out any) error {
	for attempt := 1; ; attempt++ {
		res, err := send(ctx)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(res.Body, maxBody))
			res.Body.Close()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !transient(err) {
				return fmt.Errorf("client: %w", err)
			}
			if attempt >= c.maxAttempts {
				return fmt.Errorf("client: after %d attempts: %w", attempt, err)
			}
			if err := sleep(ctx, c.backoff(attempt)); err != nil {
				return err
			}
			continue
		}
		if res.StatusCode >= 200 && res.StatusCode < 300 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("client: decode %d answer: %w", res.StatusCode, err)
			}
			return nil
		}
		p := problemOf(res, body)
		if !c.retryable(p, keyed) || attempt >= c.maxAttempts {
			return p
		}
		wait, ok := retryAfter(res.Header)
		if !ok {
			wait = c.backoff(attempt)
		} else if wait > c.maxRetryAfter {
			return p
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return p // waiting would outlast the caller's deadline
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (c *Client) retryable(p *Problem, keyed bool) bool {
	switch p.Status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	case http.StatusConflict:
		return keyed && p.Code == ProblemCodeIdempotencyKeyInUse
	}
	return false
}

// transient reports whether a transport error may pass on a retry: the
// connection failed, was reset or timed out. A malformed URL, a refused
// certificate or a protocol mismatch will fail again, and is returned at once.
func transient(err error) bool {
	var cert *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	if errors.As(err, &cert) || errors.As(err, &unknownAuth) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &header) {
		return false
	}
	var ne net.Error
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return dns.IsTemporary || dns.IsTimeout
	case errors.As(err, &op), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &ne):
		return ne.Timeout()
	}
	return false
}

// backoff is the wait before attempt+1 without a Retry-After: exponential
// with full jitter, capped at maxRetryAfter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.backoffBase << min(attempt-1, 16)
	if d <= 0 || d > c.maxRetryAfter {
		d = c.maxRetryAfter
	}
	return d/2 + rand.N(d/2+1)
}

// problemOf turns an answer that is not a success into a Problem, from its
// problem+json body when it has one.
func problemOf(res *http.Response, body []byte) *Problem {
	p := &Problem{}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		if json.Unmarshal(body, p) != nil {
			p = &Problem{}
		}
	}
	if p.Status == 0 {
		p.Status = res.StatusCode
	}
	if p.Title == "" {
		p.Title = http.StatusText(res.StatusCode)
	}
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.RequestId == nil {
		if id := res.Header.Get("X-Request-Id"); id != "" {
			p.RequestId = &id
		}
	}
	return p
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date.
func retryAfter(h http.Header) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newIdempotencyKey returns 128 random bits in hex.
func newIdempotencyKey() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
