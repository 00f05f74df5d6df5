package downstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReaderConfig configures a [Reader].
type ReaderConfig struct {
	// Prefix starts every key. Defaults to "ag:".
	Prefix string

	// TTL is how long a view is kept as the fallback after it was read. Defaults to 24h.
	TTL time.Duration

	// RedisTimeout bounds each Redis command. Defaults to 500ms.
	RedisTimeout time.Duration

	// Logger receives fallbacks and cache errors. Defaults to discarding everything.
	Logger *slog.Logger
}

func (c ReaderConfig) withDefaults() ReaderConfig {
	if c.Prefix == "" {
		c.Prefix = "ag:"
	}
	if c.TTL <= 0 {
		c.TTL = 24 * time.Hour
	}
	if c.RedisTimeout <= 0 {
		c.RedisTimeout = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Reader reads account views through a [Portfolio] client (so through its breaker, with its
// timeout) and keeps the last good view of each account in Redis, per tenant: when the
// portfolio service cannot answer, it returns that view marked stale. It is safe for
// concurrent use.
type Reader struct {
	p    *Portfolio
	rdb  redis.UniversalClient
	cfg  ReaderConfig
	keys keys
}

// Snapshot is a view as a Reader returns it.
type Snapshot struct {
	View
	// Stale is true when the portfolio service could not answer and View is the last one
	// read; View.AsOf says how old it is.
	Stale bool
}

// NewReader returns a Reader of p that caches views in rdb.
func NewReader(p *Portfolio, rdb redis.UniversalClient, cfg ReaderConfig) *Reader {
	cfg = cfg.withDefaults()
	return &Reader{p: p, rdb: rdb, cfg: cfg, keys: keys{cfg.Prefix}}
}

// Breaker returns the state of the portfolio breaker the Reader reads through.
func (r *Reader) Breaker() BreakerStatus { return r.p.Breaker() }

// Read returns the view of accountID for tenant: fresh from the portfolio service, or,
// when the call fails transiently (or the breaker is open), the last view read for this
// tenant, with Stale set. With no view to fall back on, it returns the call's error, which
// [IsTransient] and [RetryAfter] describe. Other errors (a canceled context, a 4xx) are
// returned as they are.
func (r *Reader) Read(ctx context.Context, tenant, accountID string) (Snapshot, error) {
	v, err := r.p.Get(ctx, tenant, accountID)
	if err == nil {
		r.store(ctx, tenant, v)
		return Snapshot{View: v}, nil
	}
	if errors.Is(err, ErrUnknownAccount) {
		// The tenant has no such account (any more): an outage must not bring an old view back.
		r.forget(ctx, tenant, accountID)
	}
	if !IsTransient(err) {
		return Snapshot{}, err
	}
	last, ok := r.load(ctx, tenant, accountID)
	if !ok {
		return Snapshot{}, fmt.Errorf("no earlier view: %w", err)
	}
	r.cfg.Logger.InfoContext(ctx, "portfolio unavailable; serving the last known view",
		"tenant", tenant, "account_id", accountID, "as_of", last.AsOf, "err", err)
	return Snapshot{View: last, Stale: true}, nil
}

// cachedView is a View as stored in Redis.
type cachedView struct {
	AccountID string    `json:"account_id"`
	Cash      float64   `json:"cash"`
	Reserved  float64   `json:"reserved"`
	Available float64   `json:"available"`
	AsOf      time.Time `json:"as_of"`
}

func (r *Reader) store(ctx context.Context, tenant string, v View) {
	data, _ := json.Marshal(cachedView(v))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.RedisTimeout)
	defer cancel()
	if err := r.rdb.Set(ctx, r.keys.view(tenant, v.AccountID), data, r.cfg.TTL).Err(); err != nil {
		r.cfg.Logger.WarnContext(ctx, "cache portfolio view", "tenant", tenant, "account_id", v.AccountID, "err", err)
	}
}

func (r *Reader) forget(ctx context.Context, tenant, accountID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.RedisTimeout)
	defer cancel()
	if err := r.rdb.Del(ctx, r.keys.view(tenant, accountID)).Err(); err != nil {
		r.cfg.Logger.WarnContext(ctx, "forget portfolio view", "tenant", tenant, "account_id", accountID, "err", err)
	}
}

func (r *Reader) load(ctx context.Context, tenant, accountID string) (View, bool) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RedisTimeout)
	defer cancel()
	data, err := r.rdb.Get(ctx, r.keys.view(tenant, accountID)).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.cfg.Logger.WarnContext(ctx, "read cached portfolio view", "tenant", tenant, "account_id", accountID, "err", err)
		}
		return View{}, false
	}
	var c cachedView
	if err := json.Unmarshal(data, &c); err != nil || c.AccountID != accountID {
		r.cfg.Logger.WarnContext(ctx, "cached portfolio view unreadable; ignored", "tenant", tenant, "account_id", accountID, "err", err)
		return View{}, false
	}
	return View(c), true
}
