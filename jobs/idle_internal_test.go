package jobs

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestWorkerWaitsForWorkOnlyOnAOneServerClient: the wait for work needs a
// client of its own for the Asynq servers, which only a plain client gives
// safely; a Sentinel client's clone would keep talking to a demoted master.
func TestWorkerWaitsForWorkOnlyOnAOneServerClient(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { plain.Close() })
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { failover.Close() })
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		cfg  WorkerConfig
		wait bool
	}{
		{"plain client", plain, WorkerConfig{}, true},
		{"plain client, IdleWait negative", plain, WorkerConfig{IdleWait: -1}, false},
		{"sentinel client", failover, WorkerConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWorker(tc.rdb, &Saga{}, tc.cfg)
			if w.hooked != nil || w.idle != nil {
				t.Fatal("a worker not started holds a client of its own")
			}
			w.build() // what Start does first
			if got := w.idle != nil && w.idle.block != nil; got != tc.wait {
				t.Fatalf("waits for work: %v, want %v", got, tc.wait)
			}
			if w.hooked != nil {
				w.hooked.Close()
			}
			if w.idle != nil {
				w.idle.close()
			}
		})
	}
}
