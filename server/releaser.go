package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaser frees the idempotency claims of requests that failed on our side
// (5xx, most often Redis away) when the release itself could not reach
// Redis. Left alone, such a claim lives until its TTL
// (Config.IdempotencyClaimTTL, 30 s) ends, and the client's honest retry
// gets 409 in the meantime; the releaser tries again, quickly at first
// (every 100 ms, doubling to 1 s), until the release succeeds or the claim
// has expired by itself. A retry therefore finds its key free within about
// a second of Redis coming back. Only if this process dies too does the
// claim wait for its TTL.
//
// The release is conditional (finishScript): it deletes the key only while
// it still holds this request's claim, so a later request's claim or a
// recorded answer is never touched.
type releaser struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]heldClaim // by Redis key
	running bool
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// heldClaim is a claim to release, and when it expires by itself.
type heldClaim struct {
	claim   string
	expires time.Time
}

func newReleaser(rdb redis.UniversalClient, log *slog.Logger) *releaser {
	return &releaser{rdb: rdb, log: log, pending: make(map[string]heldClaim), stop: make(chan struct{})}
}

// add queues the release of claim under key, until expires.
func (r *releaser) add(key, claim string, expires time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.pending[key] = heldClaim{claim, expires}
	if !r.running {
		r.running = true
		r.wg.Add(1)
		go r.run()
	}
}

func (r *releaser) run() {
	defer r.wg.Done()
	wait := 100 * time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.pass()
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		wait = min(2*wait, time.Second)
		t.Reset(wait)
	}
}

// pass tries every pending release once, and stops at the first error:
// Redis is still away.
func (r *releaser) pass() {
	r.mu.Lock()
	batch := make(map[string]heldClaim, len(r.pending))
	for k, c := range r.pending {
		batch[k] = c
	}
	r.mu.Unlock()
	done := func(key string, c heldClaim) {
		r.mu.Lock()
		if r.pending[key] == c {
			delete(r.pending, key)
		}
		r.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := time.Now()
	for key, c := range batch {
		if now.After(c.expires) {
			done(key, c) // gone by itself
			continue
		}
		if err := finishScript.Run(ctx, r.rdb, []string{key}, c.claim, "", 0).Err(); err != nil {
			return
		}
		done(key, c)
	}
}

// close stops the retries; the claims left expire by themselves.
func (r *releaser) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	if n := len(r.pending); n > 0 {
		r.log.Warn("idempotency claims not released at shutdown; they expire by themselves", "claims", n)
	}
	close(r.stop)
	r.mu.Unlock()
	r.wg.Wait()
}
