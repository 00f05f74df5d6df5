package downstream

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Config configures the client of one downstream service.
type Config struct {
	// BaseURL is the service's base URL, such as "http://portfolio:8080". Required.
	BaseURL string

	// Timeout bounds one HTTP attempt, from sending the request to reading the whole answer.
	// Defaults to 2s.
	Timeout time.Duration

	// MaxAttempts is the number of attempts within one call when attempts fail transiently.
	// Defaults to 3.
	MaxAttempts int

	// BackoffBase is the wait before the second attempt; each later wait doubles, with
	// jitter, up to BackoffMax. Defaults to 50ms.
	BackoffBase time.Duration

	// BackoffMax caps the wait between attempts. Defaults to 1s.
	BackoffMax time.Duration

	// Budget bounds one call: its attempts, the waits between them and the wait for a
	// bulkhead slot. Defaults to 5s.
	Budget time.Duration

	// MaxConcurrent caps the HTTP attempts in flight at once (the bulkhead). Further
	// attempts wait for a slot up to BulkheadWait, within the Budget, or fail with
	// ErrBulkheadFull. Defaults to 64.
	MaxConcurrent int

	// BulkheadWait is how long an attempt waits for a free slot. Defaults to 0: it fails at
	// once, so that callers do not pile up behind a slow downstream (a worker would hold
	// its goroutine while waiting); the error says when to come back.
	BulkheadWait time.Duration

	// Breaker configures the circuit breaker. Its zero value is the defaults.
	Breaker BreakerConfig

	// HTTPClient sends the requests. Defaults to a client of its own, with a connection
	// pool sized for MaxConcurrent and no redirects.
	HTTPClient *http.Client

	// MaxBodyBytes is the largest answer read; a larger one is ErrBadResponse. Defaults to 1 MiB.
	MaxBodyBytes int64

	// Logger receives retries and breaker state changes. Defaults to discarding everything.
	Logger *slog.Logger

	// OnStateChange, if set, is called when the breaker changes state, with the downstream's
	// name ("portfolio" or "execution"), also when another process caused the change. It
	// may run while the breaker holds its lock: it must be quick and must not call the
	// client (BreakerState included).
	OnStateChange func(name string, from, to gobreaker.State)

	// Shared, if set, shares the breaker's trips with the other processes through Redis
	// (see [Shared]). Without it the breaker decides alone.
	Shared *Shared
}

// BreakerConfig configures a downstream's circuit breaker.
type BreakerConfig struct {
	// FailureRatio is the share of failed attempts in the window, from 0 to 1, that opens
	// the breaker. Defaults to 0.5.
	FailureRatio float64

	// MinRequests is the number of completed attempts in the window below which the breaker
	// stays closed, whatever the ratio. Defaults to 10.
	MinRequests int

	// Interval is the length of the rolling window of the closed breaker, kept in ten
	// buckets. Defaults to 10s.
	Interval time.Duration

	// OpenTimeout is how long the breaker stays open before it lets probes through
	// (half-open). Defaults to 5s.
	OpenTimeout time.Duration

	// HalfOpenProbes is the number of probes let through while half-open; that many
	// successes close the breaker, and one failure opens it again. Defaults to 1.
	HalfOpenProbes int

	// ConsecutiveFailures is the number of failed attempts in a row that opens the
	// breaker, whatever the ratio: a downstream that went down after a busy healthy period
	// would otherwise be called until its failures outweigh the window's successes.
	// Defaults to 5.
	ConsecutiveFailures int
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = 50 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = time.Second
	}
	if c.Budget == 0 {
		c.Budget = 5 * time.Second
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 64
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil && c.MaxConcurrent > 0 {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = c.MaxConcurrent
		c.HTTPClient = &http.Client{
			Transport: t,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	c.Breaker = c.Breaker.withDefaults()
	return c
}

func (b BreakerConfig) withDefaults() BreakerConfig {
	if b.FailureRatio == 0 {
		b.FailureRatio = 0.5
	}
	if b.MinRequests == 0 {
		b.MinRequests = 10
	}
	if b.Interval == 0 {
		b.Interval = 10 * time.Second
	}
	if b.OpenTimeout == 0 {
		b.OpenTimeout = 5 * time.Second
	}
	if b.HalfOpenProbes == 0 {
		b.HalfOpenProbes = 1
	}
	if b.ConsecutiveFailures == 0 {
		b.ConsecutiveFailures = 5
	}
	return b
}

func (c Config) validate() error {
	u, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		return errors.New("missing BaseURL")
	case err != nil:
		return fmt.Errorf("BaseURL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("BaseURL %q is not an http(s) URL", c.BaseURL)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("BaseURL %q must not have a query or fragment", c.BaseURL)
	case c.Timeout < 0, c.BackoffBase < 0, c.BackoffMax < 0, c.Budget < 0, c.BulkheadWait < 0:
		return errors.New("durations must not be negative")
	case c.BackoffBase > c.BackoffMax:
		return errors.New("BackoffBase must not exceed BackoffMax")
	case c.MaxAttempts < 1:
		return errors.New("MaxAttempts must be at least 1")
	case c.MaxConcurrent < 1:
		return errors.New("MaxConcurrent must be at least 1")
	case c.MaxBodyBytes < 1:
		return errors.New("MaxBodyBytes must be positive")
	}
	b := c.Breaker
	switch {
	case !(b.FailureRatio > 0 && b.FailureRatio <= 1):
		return errors.New("Breaker.FailureRatio must be in (0, 1]")
	case b.MinRequests < 1 || int64(b.MinRequests) > math.MaxUint32:
		return errors.New("Breaker.MinRequests must be at least 1")
	case b.Interval < 0, b.OpenTimeout < 0:
		return errors.New("breaker durations must not be negative")
	case b.HalfOpenProbes < 1 || int64(b.HalfOpenProbes) > math.MaxUint32:
		return errors.New("Breaker.HalfOpenProbes must be at least 1")
	case b.ConsecutiveFailures < 1 || int64(b.ConsecutiveFailures) > math.MaxUint32:
		return errors.New("Breaker.ConsecutiveFailures must be at least 1")
	}
	return nil
}

// baseURL is c.BaseURL without a trailing slash, ready for paths to be appended.
func (c Config) baseURL() string {
	return strings.TrimRight(c.BaseURL, "/")
}
