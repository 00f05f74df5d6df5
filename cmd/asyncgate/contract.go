package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/server"
)

// contractConfig reads the flags of the integrator's contract (admin keys,
// key cache, rate limits) into cfg.
func (o *options) contractConfig(cfg *server.Config) error {
	var errs []error
	admin, err := parseKeys(o.adminKeys)
	if err != nil {
		errs = append(errs, errors.New("--admin-keys wants key=tenant pairs separated by commas"))
	}
	cfg.AdminKeys = admin
	cfg.KeyCacheTTL = o.keyCacheTTL
	if cfg.RateLimit, err = parseRateLimit(o.rateLimit); err != nil {
		errs = append(errs, fmt.Errorf("--rate-limit: %w", err))
	}
	if cfg.TenantRateLimits, err = parseTenantRateLimits(o.tenantLimits); err != nil {
		errs = append(errs, fmt.Errorf("--tenant-rate-limits: %w", err))
	}
	return errors.Join(errs...)
}

// parseRateLimit parses RATE/PERIOD[:BURST], such as 100/s, 6000/m:200 or
// 10/500ms; "off", "0" and "" mean no limit. PERIOD is s, m, h or a Go
// duration.
func parseRateLimit(v string) (server.RateLimit, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "off" || v == "0" {
		return server.RateLimit{}, nil
	}
	bad := fmt.Errorf("%q is not RATE/PERIOD[:BURST], such as 100/s or 6000/m:200, or off", v)
	rate, rest, ok := strings.Cut(v, "/")
	if !ok {
		return server.RateLimit{}, bad
	}
	period, burst, hasBurst := strings.Cut(rest, ":")
	var l server.RateLimit
	var err error
	if l.Rate, err = strconv.Atoi(rate); err != nil || l.Rate < 1 {
		return server.RateLimit{}, bad
	}
	switch period {
	case "s":
		l.Period = time.Second
	case "m":
		l.Period = time.Minute
	case "h":
		l.Period = time.Hour
	default:
		if l.Period, err = time.ParseDuration(period); err != nil || l.Period < time.Millisecond {
			return server.RateLimit{}, bad
		}
	}
	if hasBurst {
		if l.Burst, err = strconv.Atoi(burst); err != nil || l.Burst < 1 {
			return server.RateLimit{}, bad
		}
	}
	return l, nil
}

// parseTenantRateLimits parses "tenant=LIMIT,tenant2=LIMIT2".
func parseTenantRateLimits(v string) (map[string]server.RateLimit, error) {
	out := make(map[string]server.RateLimit)
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		t, lim, ok := strings.Cut(pair, "=")
		if !ok || t == "" {
			return nil, fmt.Errorf("%q is not tenant=RATE/PERIOD[:BURST]", pair)
		}
		l, err := parseRateLimit(lim)
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", t, err)
		}
		out[t] = l
	}
	return out, nil
}
