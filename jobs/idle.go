package jobs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// idleWaiter makes an idle Asynq server wait for work instead of polling
// (decision 57). Asynq's processor runs its dequeue script on each of the
// server's queues in turn and, after a round that found nothing, sleeps
// TaskCheckInterval; it has no way to be woken. The waiter is a go-redis
// hook on the client the server uses: when a whole round of dequeues came
// back empty, it holds the last one back until a task arrives on one of the
// server's queues or IdleWait passes, so the short TaskCheckInterval that
// follows is all the latency a new task sees, and an idle server makes a
// round of dequeues per IdleWait instead of per TaskCheckInterval. A server
// that had a task within the last busyLinger polls, as before.
//
// A task's arrival is seen without any help from the enqueuers: a
// BLMOVE of each pending list onto itself (head to head) blocks until the
// list has an element and leaves it as it was. An error of the blocking
// call (a Redis without BLMOVE) ends the wait: the server polls as before.
type idleWaiter struct {
	rdb  redis.UniversalClient // for the blocking calls; not hooked
	wait time.Duration
	done chan struct{}
	once sync.Once
	// broken is set when a blocking call failed other than by timing out:
	// from then on the servers poll every TaskCheckInterval.
	broken atomic.Bool

	mu      sync.Mutex
	servers map[string]*idleServer // by pending key
}

// idleServer is the state of one Asynq server's dequeue loop (one goroutine).
type idleServer struct {
	pending []string      // the pending lists of the server's queues
	empty   int           // dequeues in a row that found nothing
	woken   bool          // the last wait ended with a wake-up
	busy    time.Time     // when the server last dequeued a task
	wake    chan bool     // true: a task arrived; false: the blocking call failed
	block   []atomic.Bool // a BLMOVE on pending[i] is running
}

// busyLinger is how long a server that dequeued a task polls before it
// waits for work again.
const busyLinger = time.Second

func newIdleWaiter(rdb redis.UniversalClient, wait time.Duration) *idleWaiter {
	return &idleWaiter{rdb: rdb, wait: wait, done: make(chan struct{}), servers: make(map[string]*idleServer)}
}

// pendingKey is Asynq's pending list of queue q.
func pendingKey(q string) string { return "asynq:{" + q + "}:pending" }

// addServer registers the queues of one Asynq server.
func (w *idleWaiter) addServer(queues map[string]int) {
	s := &idleServer{wake: make(chan bool, 1), block: make([]atomic.Bool, len(queues))}
	for q := range queues {
		s.pending = append(s.pending, pendingKey(q))
	}
	w.mu.Lock()
	for _, k := range s.pending {
		w.servers[k] = s
	}
	w.mu.Unlock()
}

// stop ends every wait at once (before the servers shut down).
func (w *idleWaiter) stop() { w.once.Do(func() { close(w.done) }) }

func (w *idleWaiter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *idleWaiter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (w *idleWaiter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		s := w.dequeueOf(cmd)
		if s == nil {
			return err
		}
		if !errors.Is(err, redis.Nil) {
			s.empty, s.woken, s.busy = 0, false, time.Now()
			return err
		}
		if s.empty++; s.empty < len(s.pending) {
			return err
		}
		s.empty = 0
		// A server that had work within the last busyLinger polls as Asynq
		// does: under load its queues empty and fill every few
		// milliseconds, and a wake-up costs a write (an fsync under
		// appendfsync always) where an empty dequeue costs none.
		if !w.broken.Load() && time.Since(s.busy) >= busyLinger {
			w.idle(ctx, s)
		}
		return err
	}
}

// dequeueOf returns the server whose dequeue script cmd runs, or nil.
// Asynq's dequeue passes 4 keys: the queue's pending, paused, active and
// lease keys.
func (w *idleWaiter) dequeueOf(cmd redis.Cmder) *idleServer {
	args := cmd.Args()
	if len(args) < 5 {
		return nil
	}
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return nil
	}
	if n, ok := args[2].(int); !ok || n != 4 {
		return nil
	}
	pending, ok1 := args[3].(string)
	paused, ok2 := args[4].(string)
	if !ok1 || !ok2 || !strings.HasSuffix(pending, ":pending") || !strings.HasSuffix(paused, ":paused") {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.servers[pending]
}

// idle waits until a task arrives on one of s's queues, IdleWait passes,
// the waiter stops or ctx ends.
func (w *idleWaiter) idle(ctx context.Context, s *idleServer) {
	// A little past the blocking calls' own timeout, so that they have
	// returned before the next wait starts new ones.
	t := time.NewTimer(w.wait + w.wait/10)
	defer t.Stop()
	if s.woken {
		// The last wake-up found nothing: another worker took the task, or
		// the queue is paused with tasks in it (its list stays non-empty).
		// Sleep this round out, or a paused queue would be polled flat out.
		s.woken = false
		select {
		case <-t.C:
		case <-w.done:
		case <-ctx.Done():
		}
		return
	}
	select {
	case <-s.wake: // stale
	default:
	}
	for i, key := range s.pending {
		if !s.block[i].CompareAndSwap(false, true) {
			continue // still blocking since an earlier wait
		}
		go func() {
			err := w.rdb.BLMove(context.Background(), key, key, "LEFT", "LEFT", w.wait).Err()
			s.block[i].Store(false)
			if errors.Is(err, redis.Nil) {
				return // timed out: the waiter's timer ends the wait
			}
			if err != nil {
				select {
				case <-w.done:
					return // the client closed under us
				default:
				}
				w.broken.Store(true)
			}
			select {
			case s.wake <- err == nil:
			default:
			}
		}()
	}
	select {
	case s.woken = <-s.wake:
	case <-t.C:
	case <-w.done:
	case <-ctx.Done():
	}
}
