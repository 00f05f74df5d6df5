package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/durability"
)

// durabilityOptions are the flags of what a 202 promises (see
// internal/durability and the README's Durability section).
type durabilityOptions struct {
	mode        string
	minReplicas int
	timeout     time.Duration
	assumeFsync bool
}

// register adds the flags to fs, with defaults from env; bad ASYNCGATE_*
// values join envErr.
func (d *durabilityOptions) register(fs *flag.FlagSet, env func(name, def string) string, envErr *error) {
	envName := func(n string) string { return "ASYNCGATE_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_")) }
	fs.StringVar(&d.mode, "durability", env("durability", string(durability.Strict)),
		"strict: a 202 (and every other acknowledged write) is on disk (appendfsync always, or WAITAOF) or on replicas (--redis-min-replicas) before the answer, and the process refuses to start when Redis can promise neither; relaxed: no such wait, a Redis crash can lose acknowledged orders (env "+envName("durability")+")")
	fs.IntVar(&d.minReplicas, "redis-min-replicas", 0,
		"with --durability strict, every acknowledged write waits (WAIT) until this many replicas have it, or answers 503 after --durability-timeout; 0: rely on the AOF (env "+envName("redis-min-replicas")+")")
	d.timeout = time.Second
	fs.Func("durability-timeout", "how long an acknowledged write waits for replicas (WAIT) or the AOF fsync (WAITAOF) before it answers 503; at most "+durability.MaxTimeout.String()+" (env "+envName("durability-timeout")+", default 1s)", func(s string) error {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 || v > durability.MaxTimeout {
			return fmt.Errorf("want a duration above 0 and at most %s, such as 1s", durability.MaxTimeout)
		}
		d.timeout = v
		return nil
	})
	fs.BoolVar(&d.assumeFsync, "redis-assume-fsync-always", false,
		"with --durability strict, trust that Redis runs appendonly yes and appendfsync always without checking (for managed Redis where CONFIG is disabled) (env "+envName("redis-assume-fsync-always")+")")
	for _, n := range []string{"redis-min-replicas", "durability-timeout", "redis-assume-fsync-always"} {
		if v := env(n, ""); v != "" {
			if err := fs.Set(n, v); err != nil {
				*envErr = errors.Join(*envErr, fmt.Errorf("%s: %v", envName(n), err))
			}
		}
	}
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
