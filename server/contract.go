package server

import (
	"errors"
	"fmt"

	"github.com/go-redis/redis_rate/v10"

	"github.com/asyncgate/asyncgate/apikeys"
)

// The integrator's contract, enforced on every /v1 request by three
// middlewares, in this order:
//
//  1. authenticate (auth.go): the API key. It comes first because the other
//     two are per key and per tenant, and because a request without a valid
//     key must cost no more than a (cached) key lookup and leave no state.
//  2. rateLimit (ratelimit.go): charged per key before any work, replays
//     included: a client that hammers replays is still hammering. A 429
//     leaves no state behind.
//  3. idempotency (idempotency.go): claims the Idempotency-Key of a POST,
//     replays recorded answers, records new ones.
//
// Round trips: key lookups are cached in-process (no Redis on the hot
// path); the limiter's script and the idempotency claim go to Redis in one
// pipeline; the answer to record is written in the background, batched with
// those of concurrent requests (recorder.go). So the contract adds one round
// trip to a request's latency.

// validateContract checks the fields of Config that the contract uses.
func (c Config) validateContract() error {
	for k, t := range c.AdminKeys {
		if len(k) < 16 {
			return errors.New("server: admin keys must be at least 16 characters")
		}
		if !tenantRe.MatchString(t) {
			return fmt.Errorf("server: tenant %q must be 1-64 of [a-z0-9_-]", t)
		}
		if _, ok := c.APIKeys[k]; ok {
			return errors.New("server: a key is both an API key and an admin key")
		}
	}
	if err := c.RateLimit.validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	for t, l := range c.TenantRateLimits {
		if !tenantRe.MatchString(t) {
			return fmt.Errorf("server: rate limit of tenant %q: tenants are 1-64 of [a-z0-9_-]", t)
		}
		if err := l.validate(); err != nil {
			return fmt.Errorf("server: tenant %s: %w", t, err)
		}
	}
	if c.KeyCacheTTL < 0 || c.IdempotencyTTL < 0 || c.IdempotencyClaimTTL < 0 {
		return errors.New("server: negative TTL")
	}
	return nil
}

// initContract sets up keys, the key cache and the limits.
func (s *Server) initContract() error {
	cfg := s.cfg
	if len(cfg.APIKeys) == 0 && len(cfg.AdminKeys) == 0 && s.deps.Keys == nil {
		return errors.New("server: no API keys configured and no key store; every endpoint needs a key")
	}
	s.keys = make(map[[32]byte]*principal, len(cfg.APIKeys)+len(cfg.AdminKeys))
	for k, t := range cfg.APIKeys {
		s.keys[apikeys.Hash(k)] = staticPrincipal(k, t, false)
	}
	for k, t := range cfg.AdminKeys {
		s.keys[apikeys.Hash(k)] = staticPrincipal(k, t, true)
	}
	s.keyCache = &keyCache{ttl: cfg.KeyCacheTTL, max: 10_000, m: make(map[[32]byte]*keyEntry)}
	s.redisKeys = redisKeys{prefix: "ag:"}
	if s.deps.RedisClient == nil {
		if cfg.RateLimit.Rate > 0 || len(cfg.TenantRateLimits) > 0 {
			return errors.New("server: rate limits need Deps.RedisClient")
		}
		return nil // no limits, no idempotency
	}
	s.batcher = newBatcher(s.deps.RedisClient)
	s.releaser = newReleaser(s.deps.RedisClient, s.log)
	s.recorder = newRecorder(s.batcher, s.deps.RedisClient, cfg.IdempotencyTTL, s.log)
	s.defaultLimit = cfg.RateLimit.gcra()
	s.limits = make(map[string]redis_rate.Limit, len(cfg.TenantRateLimits))
	for t, l := range cfg.TenantRateLimits {
		s.limits[t] = l.gcra()
	}
	return nil
}

// Close writes the idempotency records still pending. Call it once the HTTP
// server has stopped taking requests.
func (s *Server) Close() {
	if s.batcher != nil {
		s.batcher.close()
		s.releaser.close()
	}
}
