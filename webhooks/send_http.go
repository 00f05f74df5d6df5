package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asyncgate/asyncgate/internal/human"
)

// httpSender POSTs messages to https (and, where allowed, http) receivers.
type httpSender struct {
	client    *http.Client
	timeout   time.Duration
	maxBody   int
	maxRetry  time.Duration
	userAgent string
	now       func() time.Time
}

func newHTTPSender(cfg DelivererConfig) *httpSender {
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 nil,
			DialContext:           cfg.Guard.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1000,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return &httpSender{
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect is the receiver's answer, recorded as a failure; it
			// is never followed (it could point anywhere, even past the guard
			// when a custom Transport is used).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout: cfg.Timeout, maxBody: cfg.MaxResponseBytes, maxRetry: cfg.MaxRetryAfter,
		userAgent: cfg.UserAgent, now: cfg.Now,
	}
}

// Close closes the idle connections to receivers.
func (s *httpSender) Close() { s.client.CloseIdleConnections() }

// Send POSTs m and reads the start of the answer. Only a 2xx is a success.
func (s *httpSender) Send(ctx context.Context, dest *url.URL, m *Message) (sent Sent) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.String(), bytes.NewReader(m.Body))
	if err != nil {
		return Sent{Err: "bad request: " + unwrapURLError(err).Error()}
	}
	for k, v := range m.Header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", s.userAgent)

	resp, err := s.client.Do(req)
	if err != nil {
		return Sent{Err: describe(err, s.timeout)}
	}
	defer resp.Body.Close()
	sent.StatusCode, sent.Header = resp.StatusCode, resp.Header
	// Read at most the limit: a huge or endless body costs us nothing more.
	// Closing the rest unread drops the connection instead of draining it.
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, int64(s.maxBody)+1))
	if len(buf) > s.maxBody {
		buf, sent.ResponseTruncated = buf[:s.maxBody], true
	}
	sent.Response = strings.ToValidUTF8(string(buf), string(utf8.RuneError))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		// The receiver said yes; how the rest of the body ends does not matter.
		return sent
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		sent.Err = fmt.Sprintf("the receiver answered %d (a redirect to %q, not followed)", resp.StatusCode, resp.Header.Get("Location"))
	default:
		sent.Err = fmt.Sprintf("the receiver answered %d", resp.StatusCode)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), s.now()); ok {
			sent.RetryAfter = min(ra, s.maxRetry)
			sent.Err += "; Retry-After " + human.Duration(sent.RetryAfter) + " honoured"
		}
	}
	return sent
}

// parseRetryAfter reads Retry-After: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(365*24*3600))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// describe says why a request (or a broker connect) got no answer,
// without the URL that url.Error repeats.
func describe(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrURLNotAllowed):
		return "refused at connect: " + strings.TrimPrefix(innermost(err, ErrURLNotAllowed), "webhooks: ")
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no answer within %s", timeout)
	}
	return unwrapURLError(err).Error()
}

// innermost returns the message of the deepest error in err's chain that
// wraps target (target itself excluded), or err's own message.
func innermost(err, target error) string {
	msg := err.Error()
	for e := err; e != nil && e != target && errors.Is(e, target); e = errors.Unwrap(e) {
		msg = e.Error()
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				if errors.Is(x, target) {
					return innermost(x, target)
				}
			}
		}
	}
	return msg
}
