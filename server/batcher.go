package server

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends Redis commands that nobody waits for (the recorder's
// answers) from one background goroutine, the commands of concurrent
// requests in one pipeline: under load, many requests share a round trip.
// It waits up to batchLinger for company before it sends, and stops after
// batchIdle without work (starting again with the next item), so that an
// idle server runs no goroutine of its own.
//
// The requests' own commands (the rate limiter's script and the claim) do
// not go through it: handing them to a goroutine and back cost more than the
// round trips it saved when measured (BenchmarkAcceptWithContract), and so
// did go-redis's experimental AutoPipeliner.
type batcher struct {
	rdb redis.UniversalClient

	mu      sync.Mutex
	ch      chan *batchItem
	closed  bool
	running bool           // the writer runs; it stops when idle
	wg      sync.WaitGroup // the writer
}

// batchItem is the commands of one request, and what to do once they ran
// (in the writer: keep it short).
type batchItem struct {
	cmds  []redis.Cmder
	after func()
}

const (
	maxBatch    = 256
	batchLinger = time.Millisecond
	batchIdle   = 100 * time.Millisecond
	// batchTimeout bounds one pipeline.
	batchTimeout = 5 * time.Second
)

func newBatcher(rdb redis.UniversalClient) *batcher {
	return &batcher{rdb: rdb, ch: make(chan *batchItem, 4*maxBatch)}
}

// background sends cmds later and calls after once they ran; each command
// holds its result or error. When the batcher is closed or behind, it
// sends them at once.
func (b *batcher) background(after func(), cmds ...redis.Cmder) {
	it := &batchItem{cmds: cmds, after: after}
	b.mu.Lock()
	if !b.closed {
		if !b.running {
			b.running = true
			b.wg.Add(1)
			go b.run()
		}
		select {
		case b.ch <- it: // under mu: close cannot race the send
			b.mu.Unlock()
			return
		default:
		}
	}
	b.mu.Unlock()
	b.exec([]*batchItem{it})
}

func (b *batcher) run() {
	defer b.wg.Done()
	batch := make([]*batchItem, 0, maxBatch)
	timer := time.NewTimer(batchIdle)
	defer timer.Stop()
	for {
		var it *batchItem
		var ok bool
		select {
		case it, ok = <-b.ch:
			if !ok {
				return // closed, and drained
			}
		case <-timer.C:
			b.mu.Lock()
			if len(b.ch) == 0 { // items are sent under mu: none can slip in
				b.running = false
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			timer.Reset(batchIdle)
			continue
		}
		batch = append(batch[:0], it)
		timer.Reset(batchLinger) // Go 1.23 timers: no stale tick survives Reset
	collect:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-b.ch:
				if !ok {
					break collect
				}
				batch = append(batch, it)
			case <-timer.C:
				break collect
			}
		}
		b.exec(batch)
		timer.Reset(batchIdle)
	}
}

// exec sends the batch in one pipeline, then runs each item's after.
func (b *batcher) exec(batch []*batchItem) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	pipe := b.rdb.Pipeline()
	for _, it := range batch {
		for _, c := range it.cmds {
			pipe.Process(ctx, c)
		}
	}
	pipe.Exec(ctx) // each command holds its own result or error
	cancel()
	for _, it := range batch {
		if it.after != nil {
			it.after()
		}
	}
}

// close sends what is queued and stops the writer; later items are sent at
// once.
func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.ch)
	b.mu.Unlock()
	b.wg.Wait()
}
