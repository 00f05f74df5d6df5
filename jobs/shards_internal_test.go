package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

func TestShardOfIsStableAndSpread(t *testing.T) {
	t.Parallel()
	if got := ShardOf("01890000-0000-7000-8000-000000000001", 16); got != ShardOf("01890000-0000-7000-8000-000000000001", 16) {
		t.Fatal("ShardOf is not stable")
	}
	for _, n := range []int{0, 1} {
		if got := ShardOf("x", n); got != 0 {
			t.Errorf("ShardOf(x, %d) = %d, want 0", n, got)
		}
	}
	count := make([]int, 16)
	for i := range 16000 {
		count[ShardOf(fmt.Sprintf("01890000-0000-7000-8000-%012d", i), 16)]++
	}
	for i, c := range count {
		if c < 800 || c > 1200 { // 1000 each when even
			t.Errorf("shard %d got %d of 16000 keys: %v", i, c, count)
		}
	}
}

func TestShardQueueNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind  string
		i     int
		name  string
		valid bool
	}{{QueueOrders, 0, "orders", true}, {QueueOrders, 7, "orders.7", true}, {QueueWebhooks, 255, "webhooks.255", true}, {QueueCritical, 15, "critical.15", true}} {
		if got := ShardQueue(tc.kind, tc.i); got != tc.name {
			t.Errorf("ShardQueue(%s, %d) = %s, want %s", tc.kind, tc.i, got, tc.name)
		}
		kind, i, ok := ParseShardQueue(tc.name)
		if !ok || kind != tc.kind || i != tc.i {
			t.Errorf("ParseShardQueue(%s) = %s, %d, %v", tc.name, kind, i, ok)
		}
	}
	for _, name := range []string{"default", "orders.0", "orders.07", "orders.x", "orders.256", "orders.-1", "other.3", "authtable"} {
		if _, _, ok := ParseShardQueue(name); ok {
			t.Errorf("ParseShardQueue(%s) accepted", name)
		}
	}
	for _, n := range []int{0, -1, 257} {
		if ValidateQueueShards(n) == nil {
			t.Errorf("ValidateQueueShards(%d) accepted", n)
		}
	}
	if ValidateQueueShards(1) != nil || ValidateQueueShards(256) != nil {
		t.Error("ValidateQueueShards refuses 1 or 256")
	}
}

// TestGateLearnsWhichKeysExist: a gate over 32 keys places the few that
// exist with an EXISTS of all of them and of halves (a handful of
// commands, not one per key), and learns again only after its ttl.
func TestGateLearnsWhichKeysExist(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	ctx := context.Background()
	var keys []string
	for i := range 32 {
		keys = append(keys, pendingKey(ShardQueue(QueueOrders, i)))
	}
	sent := 0
	next := func(ctx context.Context, cmd redis.Cmder) error {
		sent++
		return rdb.Process(ctx, cmd)
	}
	for _, tc := range []struct {
		exist   []int
		maxSent int
	}{{nil, 1}, {[]int{5}, 1 + 5}, {[]int{0, 31}, 1 + 2*5}, {[]int{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}, 1}} {
		t.Run(fmt.Sprint(tc.exist), func(t *testing.T) {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				t.Fatal(err)
			}
			want := make([]bool, len(keys))
			for _, i := range tc.exist {
				want[i] = true
				rdb.LPush(ctx, keys[i], "task")
			}
			g := &gate{keys: keys, ttl: time.Hour, exist: make([]bool, len(keys))}
			sent = 0
			for i := range keys {
				ok, err := g.mayExist(ctx, next, i)
				if err != nil {
					t.Fatal(err)
				}
				// Half or more existing: all are sent (maybe), none missed.
				if ok != want[i] && !(2*len(tc.exist) >= len(keys) && ok) {
					t.Errorf("key %d: may exist %v, want %v", i, ok, want[i])
				}
			}
			if sent > tc.maxSent {
				t.Errorf("learning sent %d commands, want at most %d", sent, tc.maxSent)
			}
		})
	}
}

// TestWorkerServesShardsByPriority: with 16 shards of each kind holding
// tasks, a worker taking one task at a time picks critical shards about
// two times in three (their weight, 6 against the orders' 3) until they
// are empty, and takes from many shards of a kind, not one after another.
func TestWorkerServesShardsByPriority(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.NewClient(t)
	client := asynq.NewClientFromRedisClient(rdb)
	const perShard = 5
	for i := range DefaultQueueShards {
		for _, kind := range []string{QueueCritical, QueueOrders} {
			for range perShard {
				if _, err := client.Enqueue(asynq.NewTask("test:probe", nil), asynq.Queue(ShardQueue(kind, i))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	total := 2 * DefaultQueueShards * perShard
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	w := NewWorker(rdb, &Saga{}, WorkerConfig{Concurrency: 1, WebhookConcurrency: 1, Logger: slog.New(slog.DiscardHandler)})
	w.Mux.HandleFunc("test:probe", func(ctx context.Context, _ *asynq.Task) error {
		q, _ := asynq.GetQueueName(ctx)
		mu.Lock()
		defer mu.Unlock()
		if got = append(got, q); len(got) == total {
			close(done)
		}
		return nil
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%d of %d tasks ran", len(got), total)
	}
	mu.Lock()
	defer mu.Unlock()
	first := got[:total*6/10] // critical (half of all) is not yet empty at 2/3 of these

	critical, shards := 0, map[string]bool{}
	for _, q := range first {
		kind, _, _ := ParseShardQueue(q)
		if kind == QueueCritical {
			critical++
		}
		shards[q] = true
	}
	share := float64(critical) / float64(len(first))
	t.Logf("first %d tasks: %.2f critical, from %d shards", len(first), share, len(shards))
	if share <= 0.5 { // 3.5 standard deviations below 2/3
		t.Errorf("critical share of the first %d tasks %.2f, want about 2/3", len(first), share)
	}
	if len(shards) < DefaultQueueShards {
		t.Errorf("the first %d tasks came from %d shards, want them spread", len(first), len(shards))
	}
}
