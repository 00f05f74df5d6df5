package jobs

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Queue sharding (decision 72). Each kind of queue (critical, orders,
// webhooks) is N Asynq queues, so that on a Redis Cluster the queues, each
// in one hash slot, spread over the masters. A task goes to the shard of a
// stable key: its order id (process, resume, compensation, release,
// fan-out), its delivery id (delivery) or its endpoint id (recovery). Shard
// 0 keeps the kind's bare name, so one shard is exactly the unsharded
// layout, and the queues of a release without shards drain as shard 0.
const (
	// DefaultQueueShards is the number of shards of each kind by default.
	DefaultQueueShards = 16
	// MaxQueueShards bounds --queue-shards.
	MaxQueueShards = 256
)

// queueKinds are the kinds of queue, each sharded.
var queueKinds = []string{QueueCritical, QueueOrders, QueueWebhooks}

// ValidateQueueShards reports whether n is a usable number of shards.
func ValidateQueueShards(n int) error {
	if n < 1 || n > MaxQueueShards {
		return fmt.Errorf("queue shards: %d is out of range: want 1 to %d", n, MaxQueueShards)
	}
	return nil
}

// shardsOrDefault is n, or DefaultQueueShards when n is 0.
func shardsOrDefault(n int) int {
	if n == 0 {
		return DefaultQueueShards
	}
	return n
}

// ShardOf is the shard (0..n-1) of key among n: FNV-1a (32 bits) mod n.
// It never changes for a given key and n.
func ShardOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// ShardQueue is the name of shard i of kind: the kind itself for shard 0,
// "kind.i" for the others.
func ShardQueue(kind string, i int) string {
	if i == 0 {
		return kind
	}
	return kind + "." + strconv.Itoa(i)
}

// QueueFor is the queue of kind that a task keyed by key goes to among n shards.
func QueueFor(kind, key string, n int) string { return ShardQueue(kind, ShardOf(key, n)) }

// ParseShardQueue splits a queue name into its kind and shard. ok is false
// for a queue that is not one of asyncgate's.
func ParseShardQueue(name string) (kind string, shard int, ok bool) {
	kind, num, dotted := strings.Cut(name, ".")
	known := false
	for _, k := range queueKinds {
		known = known || k == kind
	}
	if !known {
		return "", 0, false
	}
	if !dotted {
		return kind, 0, true
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 1 || i >= MaxQueueShards || strconv.Itoa(i) != num {
		return "", 0, false
	}
	return kind, i, true
}

// ShardQueues lists the n shards of kind.
func ShardQueues(kind string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = ShardQueue(kind, i)
	}
	return out
}

// SeenShards is the largest number of shards of any kind that Asynq's
// queue set shows (one more than the highest shard index seen), or 0: a
// worker consumes at least that many, so that the shards of an enqueuer
// with a larger --queue-shards (or of one before a change to a smaller
// one) drain.
func SeenShards(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	names, err := rdb.SMembers(ctx, allQueuesKey).Result()
	if err != nil {
		return 0, fmt.Errorf("list queues: %w", err)
	}
	n := 0
	for _, q := range names {
		if _, i, ok := ParseShardQueue(q); ok && i+1 > n {
			n = i + 1
		}
	}
	return n, nil
}

// shardRetirer takes the shards beyond a worker's own count out of
// Asynq's queue set once they have held no task for a while (decision
// 96), so that workers started later consume only the current count. It
// runs in the worker's shard watch; several workers may run it at once.
type shardRetirer struct {
	rdb    redis.UniversalClient
	shards int           // the worker's own count: shards from it on retire
	after  time.Duration // how long a shard is seen empty before it retires
	log    *slog.Logger
	// empty: since when each shard beyond the count has been seen empty,
	// by queue name.
	empty map[string]time.Time
}

// check looks at the shards beyond the count that Asynq's queue set
// lists, and at those beyond it that the worker consumes (upto of each
// kind). A listed shard that holds no task, and has held none at every
// check for r.after, leaves the set; a consumed shard that holds a task
// and is not listed (an enqueuer that listed it before it retired, which
// Asynq does once per process, sent it another) is listed again.
func (r *shardRetirer) check(ctx context.Context, upto int) error {
	names, err := r.rdb.SMembers(ctx, allQueuesKey).Result()
	if err != nil {
		return fmt.Errorf("list queues: %w", err)
	}
	listed := map[string]bool{} // the shards to look at: whether the set lists them
	for _, q := range names {
		if _, i, ok := ParseShardQueue(q); ok && i >= r.shards {
			listed[q] = true
		}
	}
	for _, kind := range queueKinds {
		for i := r.shards; i < upto; i++ {
			if q := ShardQueue(kind, i); !listed[q] {
				listed[q] = false // consumed, not listed
			}
		}
	}
	now := time.Now()
	for _, q := range slices.Sorted(maps.Keys(listed)) {
		n, err := r.rdb.Exists(ctx, taskKeys(q)...).Result()
		if err != nil {
			return fmt.Errorf("look at queue %s: %w", q, err)
		}
		if n > 0 {
			delete(r.empty, q)
			if !listed[q] {
				if err := r.rdb.SAdd(ctx, allQueuesKey, q).Err(); err != nil {
					return fmt.Errorf("list queue %s again: %w", q, err)
				}
				r.log.Info("worker: a retired queue shard has tasks again (an enqueuer with a larger shard count); listed it again", "queue", q)
			}
			continue
		}
		if !listed[q] {
			continue
		}
		since, seen := r.empty[q]
		if !seen {
			r.empty[q] = now
			continue
		}
		if now.Sub(since) < r.after {
			continue
		}
		if err := r.retire(ctx, q); err != nil {
			return err
		}
		delete(r.empty, q)
	}
	return nil
}

// retire takes q out of Asynq's queue set, and puts it back when it holds
// a task by then: on a cluster the set and the queue are in two slots, so
// no script could do both at once, and a task enqueued between the look
// and the removal must keep its shard listed.
func (r *shardRetirer) retire(ctx context.Context, q string) error {
	if err := r.rdb.SRem(ctx, allQueuesKey, q).Err(); err != nil {
		return fmt.Errorf("retire queue %s: %w", q, err)
	}
	n, err := r.rdb.Exists(ctx, taskKeys(q)...).Result()
	if err == nil && n == 0 {
		r.log.Info("worker: retired an empty queue shard beyond the shard count", "queue", q, "shards", r.shards)
		return nil
	}
	// A task arrived meanwhile, or we cannot tell: list it again.
	if err := r.rdb.SAdd(ctx, allQueuesKey, q).Err(); err != nil {
		return fmt.Errorf("list queue %s again: %w", q, err)
	}
	return nil
}
