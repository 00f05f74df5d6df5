package server

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// RateLimit is a limit per API key, enforced across every API process by
// GCRA in Redis (go-redis/redis_rate): on average Rate requests per Period,
// in bursts of up to Burst requests. The zero RateLimit sets no limit.
type RateLimit struct {
	// Rate is the number of requests per Period. Zero: no limit.
	Rate int
	// Period defaults to 1s.
	Period time.Duration
	// Burst is the most requests at once. Defaults to Rate.
	Burst int
}

func (l RateLimit) withDefaults() RateLimit {
	if l.Rate > 0 && l.Period == 0 {
		l.Period = time.Second
	}
	if l.Rate > 0 && l.Burst == 0 {
		l.Burst = l.Rate
	}
	return l
}

func (l RateLimit) validate() error {
	if l.Rate < 0 || l.Burst < 0 || l.Period < 0 {
		return fmt.Errorf("rate limit %+v: negative values", l)
	}
	if l.Rate > 0 && l.Period < time.Millisecond {
		return fmt.Errorf("rate limit %+v: period under 1ms", l)
	}
	return nil
}

func (l RateLimit) gcra() redis_rate.Limit {
	return redis_rate.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst}
}

// String is "100/1s (burst 100)", or "unlimited".
func (l RateLimit) String() string {
	if l.Rate == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d/%s (burst %d)", l.Rate, l.Period, l.Burst)
}

// limitFor returns the limit of a tenant's keys; ok is false when there is none.
func (s *Server) limitFor(tenant string) (redis_rate.Limit, bool) {
	l, ok := s.limits[tenant]
	if !ok {
		l = s.defaultLimit
	}
	return l, l.Rate > 0
}

// rateLimit is the middleware after authenticate: it charges the request to
// its API key and answers 429 once the key is over its limit. Every
// answer it lets through carries RateLimit-Limit (the burst),
// RateLimit-Remaining and RateLimit-Reset (seconds until the key is back to
// a full burst).
//
// A POST with an Idempotency-Key has its claim (see idempotency.go) sent in
// the same Redis round trip as the limiter's script: the claim is made
// whatever the limiter answers, and taken back when the answer is 429.
func (s *Server) rateLimit(c *gin.Context) {
	p := c.MustGet(ctxPrincipal).(*principal)
	limit, limited := s.limitFor(p.tenant)
	idem, err := s.prepareIdempotency(c, p)
	if err != nil {
		writeProblem(c, err)
		return
	}
	if !limited {
		c.Next()
		return
	}
	ctx := c.Request.Context()
	rdb := &piggyback{UniversalClient: s.deps.RedisClient}
	if idem != nil {
		rdb.extra = idem.claimCmd(ctx)
	}
	res, err := redis_rate.NewLimiter(rdb).Allow(ctx, s.redisKeys.rateLimit(p.tenant, p.id), limit)
	rdb.flush(ctx) // in case the limiter did not use EvalSha
	if err != nil {
		if idem != nil {
			idem.release() // if the claim got through without the script
		}
		writeProblem(c, fmt.Errorf("rate limit: %w", err))
		return
	}
	h := c.Writer.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(limit.Burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(res.Remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(res.ResetAfter)))
	if res.Allowed == 0 {
		if idem != nil {
			idem.release()
		}
		retry := max(1, ceilSeconds(res.RetryAfter))
		h.Set("Retry-After", strconv.Itoa(retry))
		writeProblem(c, problemf("rate_limited", "this API key is over its limit of %s; retry after %d s", RateLimit{limit.Rate, limit.Period, limit.Burst}, retry))
		return
	}
	c.Next()
}

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
}

// piggyback is the Redis client that redis_rate runs its script on: its
// first EvalSha goes out in one pipeline with the extra commands (an
// idempotency claim), so that the rate limit and the claim cost one round
// trip. Should the limiter not call EvalSha (a newer version; the Eval
// fallback after NOSCRIPT comes after the pipeline), flush sends the
// extras alone.
//
// The pipeline leaves from the request's goroutine (see batcher for why).
type piggyback struct {
	redis.UniversalClient
	extra []redis.Cmder
	sent  bool
}

func (p *piggyback) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	if p.sent || len(p.extra) == 0 {
		return p.UniversalClient.EvalSha(ctx, sha1, keys, args...)
	}
	p.sent = true
	pipe := p.Pipeline()
	cmd := pipe.EvalSha(ctx, sha1, keys, args...)
	for _, x := range p.extra {
		pipe.Process(ctx, x)
	}
	pipe.Exec(ctx) // each command holds its own result or error
	return cmd
}

func (p *piggyback) flush(ctx context.Context) {
	if p.sent || len(p.extra) == 0 {
		return
	}
	p.sent = true
	pipe := p.Pipeline()
	for _, x := range p.extra {
		pipe.Process(ctx, x)
	}
	pipe.Exec(ctx)
}
