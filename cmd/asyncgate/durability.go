package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/durability"
	"github.com/asyncgate/asyncgate/internal/human"
)

// durabilityOptions are the flags of what a 202 promises (see
// internal/durability and the README's Durability section).
type durabilityOptions struct {
	mode        string
	minReplicas int
	timeout     time.Duration
	assumeFsync bool
}

// register adds the flags under the Redis heading (not for dev, which is
// always relaxed and says so).
func (d *durabilityOptions) register(cf *cmdFlags, ro role) {
	if ro.dev {
		return
	}
	g := cf.Group("Redis")
	d.mode = string(durability.Strict)
	g.Func("durability", "strict|relaxed", d.mode, "strict: every write the API acknowledges (a 202) is on disk (appendfsync always, or WAITAOF) or on replicas (--redis-min-replicas) before the answer, and the process refuses to start when Redis can promise neither; relaxed: no such wait, a Redis crash can lose acknowledged orders (logged once at start)",
		func(s string) error {
			m, err := durability.ParseMode(s)
			if err != nil {
				return fmt.Errorf("want strict or relaxed, not %q", s)
			}
			d.mode = string(m)
			return nil
		})
	g.Int(&d.minReplicas, "redis-min-replicas", 0, 0, "N",
		"with --durability strict: every acknowledged write waits (WAIT) until N replicas have it, or answers 503 after --durability-timeout; 0: rely on the AOF")
	d.timeout = time.Second
	g.Func("durability-timeout", "DURATION", human.Duration(d.timeout),
		"how long an acknowledged write waits for replicas (WAIT) or the AOF fsync (WAITAOF) before it answers 503; at most "+human.Duration(durability.MaxTimeout),
		func(s string) error {
			v, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil || v <= 0 || v > durability.MaxTimeout {
				return fmt.Errorf("want a duration above 0 and at most %s, such as 1s, not %q", human.Duration(durability.MaxTimeout), s)
			}
			d.timeout = v
			return nil
		})
	g.Bool(&d.assumeFsync, "redis-assume-fsync-always", false,
		"with --durability strict: trust, without CONFIG GET, that Redis runs appendonly yes and appendfsync always (managed Redis where CONFIG is disabled)")
}

// config checks the flags' values.
func (d *durabilityOptions) config(log *slog.Logger) (durability.Config, error) {
	mode, err := durability.ParseMode(d.mode)
	if err != nil {
		return durability.Config{}, err
	}
	if d.minReplicas < 0 {
		return durability.Config{}, errors.New("--redis-min-replicas must be 0 or more")
	}
	return durability.Config{Mode: mode, MinReplicas: d.minReplicas, Timeout: d.timeout,
		AssumeFsyncAlways: d.assumeFsync, Logger: log}, nil
}

// checkedBarrier is the API's durability barrier, set by the start-up
// check after app.New and before Start (nothing calls Sync before).
type checkedBarrier struct{ b *durability.Barrier }

func (c *checkedBarrier) Sync(ctx context.Context) error { return c.b.Sync(ctx) }

// check runs the start-up check of the durability promise against rdb.
func (d *durabilityOptions) check(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) (*durability.Barrier, error) {
	cfg, err := d.config(log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return durability.Check(ctx, rdb, cfg)
}
