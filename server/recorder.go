package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// recorder writes the answers of idempotent requests to Redis, each in
// place of its request's claim. It writes in the background, through the
// batcher, so that the answer goes to the client without waiting for one
// more round trip, and the answers of concurrent requests share one. Until
// an answer is written, requests of this process that find its claim are
// served from memory (pending), so a client that saw an answer always gets
// it again. Another process finds the claim and answers 409 with
// Retry-After: 1 for the moment (a round trip) that the write takes.
type recorder struct {
	b   *batcher
	rdb redis.UniversalClient
	ttl time.Duration
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]*idemRequest // claim → the request whose answer is not written yet
}

func newRecorder(b *batcher, rdb redis.UniversalClient, ttl time.Duration, log *slog.Logger) *recorder {
	return &recorder{b: b, rdb: rdb, ttl: ttl, log: log, pending: make(map[string]*idemRequest)}
}

// add records r's answer (r.record). The caller must own the claim.
func (w *recorder) add(r *idemRequest) {
	w.mu.Lock()
	w.pending[r.claimVal] = r
	w.mu.Unlock()
	cmd := evalShaCmd(finishScript.Hash(), []string{r.key}, r.claimVal, r.record, w.ttl.Milliseconds())
	w.b.background(func() { w.written(r, cmd) }, cmd)
}

// written runs once r's answer was sent: it leaves pending.
func (w *recorder) written(r *idemRequest, cmd *redis.Cmd) {
	err := cmd.Err()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") { // Redis restarted, or SCRIPT FLUSH
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		err = finishScript.Eval(ctx, w.rdb, []string{r.key}, r.claimVal, r.record, w.ttl.Milliseconds()).Err()
		cancel()
	}
	if err != nil {
		w.log.Warn("record the answer of an idempotent request; its claim expires by itself, then a retry runs the request again",
			"err", err, "tenant", r.tenant)
	}
	w.mu.Lock()
	delete(w.pending, r.claimVal)
	w.mu.Unlock()
}

// lookup returns the request whose claim is claimVal and whose answer is
// not written yet, or nil. An answer leaves pending only once written.
func (w *recorder) lookup(claimVal string) *idemRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending[claimVal]
}

// evalShaCmd is the command EVALSHA sha keys args, built for a pipeline
// with its first key where Redis Cluster routing looks for it.
func evalShaCmd(sha string, keys []string, args ...any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "evalsha", sha, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(context.Background(), a...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}
