package downstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// maxRetryAfter caps the delay a Retry-After header can ask for.
const maxRetryAfter = time.Hour

// client is what Portfolio and Execution share: one downstream, its breaker and its bulkhead.
type client struct {
	name    string
	cfg     Config
	base    string
	breaker *breaker
	slots   chan struct{}
	stats   counters
	metrics Metrics // nil: none
}

func newClient(name string, cfg Config) (*client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &client{
		name:    name,
		cfg:     cfg,
		base:    cfg.baseURL(),
		breaker: newBreaker(name, cfg),
		slots:   make(chan struct{}, cfg.MaxConcurrent),
	}, nil
}

// Stats counts a client's attempts since it was made.
type Stats struct {
	// Sent is the attempts that went out to the downstream.
	Sent int64
	// Failed is the attempts sent that failed: timeouts, connection errors, 5xx, 429, bad
	// answers. Business answers are not failures.
	Failed int64
	// BreakerRejected is the attempts an open breaker rejected without sending them.
	BreakerRejected int64
	// BulkheadRejected is the attempts that found no free slot in the bulkhead.
	BulkheadRejected int64
}

type counters struct {
	sent, failed, breakerRejected, bulkheadRejected atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Sent:             c.sent.Load(),
		Failed:           c.failed.Load(),
		BreakerRejected:  c.breakerRejected.Load(),
		BulkheadRejected: c.bulkheadRejected.Load(),
	}
}

// Headers that say on whose behalf a call is made. The downstream services are internal
// and trust them: they keep their books per tenant, and a call without a tenant is refused.
const (
	// HeaderTenant carries the tenant on every call.
	HeaderTenant = "X-Tenant-Id"
	// HeaderOrder carries the order id on every call made for an order.
	HeaderOrder = "X-Order-Id"
)

// request is one logical call to the downstream.
type request struct {
	method string
	path   string // escaped, appended to the base URL
	key    string // Idempotency-Key; empty for reads
	body   any    // JSON-encoded; nil for none
	tenant string // HeaderTenant; required
	order  string // HeaderOrder; empty for a call made for no order
}

// call performs req, retrying transient failures within the budget. handle reads the
// answer of one attempt: it returns nil, a business error, or a failure.
//
// The retry loop is written here rather than with backoff.Retry because it decides with the
// breaker, the budget and Retry-After together; backoff only supplies the jittered waits.
func (c *client) call(ctx context.Context, req request, handle func(*http.Response) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if req.tenant == "" {
		return errors.New("no tenant: every downstream call is made for a tenant")
	}
	var body []byte
	if req.body != nil {
		var err error
		if body, err = json.Marshal(req.body); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}

	budget, cancel := context.WithTimeout(ctx, c.cfg.Budget)
	defer cancel()
	waits := backoff.ExponentialBackOff{
		InitialInterval:     c.cfg.BackoffBase,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         c.cfg.BackoffMax,
	}
	acted := false    // whether any attempt may have reached the downstream and acted
	var failure error // the last failure of an attempt that was sent
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := c.tracedAttempt(ctx, budget, req, body, handle, attempt)
		c.observe(err, time.Since(start))
		if err != nil && !acted && !refusedUnprocessed(err) {
			acted = true
		}
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case (errors.Is(err, ErrBreakerOpen) || errors.Is(err, ErrBulkheadFull)) && failure != nil:
			// Rejected after a failure (which may have tripped the breaker): say what it was.
			return markUnprocessed(fmt.Errorf("%w; last failure: %v", err, failure), acted)
		case attempt >= c.cfg.MaxAttempts,
			budget.Err() != nil,
			!IsTransient(err),
			errors.Is(err, ErrBreakerOpen),
			errors.Is(err, ErrBulkheadFull):
			return markUnprocessed(err, acted)
		}
		failure = err

		wait := min(waits.NextBackOff(), c.cfg.BackoffMax)
		if hint, ok := RetryAfter(err); ok && hint > wait {
			wait = hint
		}
		if deadline, _ := budget.Deadline(); time.Until(deadline) <= wait {
			return markUnprocessed(err, acted) // the next attempt would not start within the budget
		}
		c.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "downstream call failed, retrying",
			slog.String("downstream", c.name), slog.String("path", req.path),
			slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.Any("err", err))

		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-budget.Done():
			t.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return markUnprocessed(err, acted)
		}
	}
}

// attempt makes one HTTP attempt through the breaker and the bulkhead. ctx is the
// caller's context, budget the call's.
func (c *client) attempt(ctx, budget context.Context, req request, body []byte, handle func(*http.Response) error) error {
	// An open breaker rejects before the bulkhead: a rejected call takes no slot.
	if err := c.breaker.allow(); err != nil {
		c.stats.breakerRejected.Add(1)
		return err
	}
	if err := c.acquire(ctx, budget); err != nil {
		return err
	}
	defer func() { <-c.slots }()
	probe, err := c.breaker.admit(ctx)
	if err != nil {
		if errors.Is(err, ErrBreakerOpen) {
			c.stats.breakerRejected.Add(1)
		}
		return err
	}

	sent := false
	err = c.breaker.run(probe, func() error {
		sent = true
		c.stats.sent.Add(1)
		err := c.roundTrip(budget, req, body, handle)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errCallerDone, ctx.Err())
		}
		if !goodAnswer(err) {
			c.stats.failed.Add(1)
			c.breaker.noteFailure(err)
		}
		return err
	})
	if !sent && errors.Is(err, ErrBreakerOpen) {
		c.stats.breakerRejected.Add(1)
	}
	return err
}

// acquire takes a bulkhead slot, waiting for one up to BulkheadWait, within the budget.
func (c *client) acquire(ctx, budget context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	if c.cfg.BulkheadWait > 0 {
		t := time.NewTimer(c.cfg.BulkheadWait)
		defer t.Stop()
		select {
		case c.slots <- struct{}{}:
			return nil
		case <-t.C:
		case <-budget.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", errCallerDone, ctx.Err())
			}
		}
	}
	c.stats.bulkheadRejected.Add(1)
	// The calls in flight free their slots within one attempt timeout: come back after a
	// quarter to a half of it, jittered so that the callers do not return together.
	half := c.cfg.Timeout / 2
	return &BulkheadError{Downstream: c.name, RetryAfter: max(half/2+rand.N(half/2+1), 10*time.Millisecond)}
}

// roundTrip sends req and hands the answer to handle, all within the attempt timeout.
func (c *client) roundTrip(ctx context.Context, req request, body []byte, handle func(*http.Response) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, c.base+req.path, rd)
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if req.key != "" {
		hreq.Header.Set("Idempotency-Key", req.key)
	}
	hreq.Header.Set(HeaderTenant, req.tenant)
	if req.order != "" {
		hreq.Header.Set(HeaderOrder, req.order)
	}
	injectTrace(ctx, hreq.Header) // traceparent of the attempt's span

	resp, err := c.cfg.HTTPClient.Do(hreq)
	if err != nil {
		return &connError{err}
	}
	defer func() {
		// Drain a little so that the connection can be reused; a larger rest closes it.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
	}()
	return handle(resp)
}

// statusError is the error for an answer with a status the caller did not expect.
func (c *client) statusError(resp *http.Response) error {
	return &StatusError{Downstream: c.name, Code: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
}

// parseRetryAfter reads a Retry-After header, in seconds or as an HTTP date; zero when
// absent or invalid, capped at maxRetryAfter.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return max(0, min(d, maxRetryAfter))
}

// readJSON reads the JSON body of resp, of at most limit bytes.
func readJSON(resp *http.Response, limit int64) ([]byte, error) {
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, fmt.Errorf("%w: content type %.64q", ErrBadResponse, ct)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrBadResponse, resp.ContentLength, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &connError{fmt.Errorf("read body: %w", err)}
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: body exceeds the limit of %d bytes", ErrBadResponse, limit)
	}
	return data, nil
}

// unmarshal decodes data into v; any failure is ErrBadResponse.
func unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	return nil
}

// missing is the error for a required field absent from an answer.
func missing(field string) error {
	return fmt.Errorf("%w: missing %s", ErrBadResponse, field)
}
