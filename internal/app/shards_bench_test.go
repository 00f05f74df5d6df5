//go:build bench

package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// TestShardFigures measures what queue shards cost (decision 73), for an
// API + worker in one process on its own redis-server, in the default
// configuration but for the shards and the worker's script gate: the
// Redis commands per second while idle, and at a paced 200 orders a
// second, with a webhook endpoint, the Redis commands per order (INFO
// commandstats, scripts' own commands included), the 202 → terminal
// p50/p99 and the terminal → webhook received p50/p99. The baseline is 16
// shards with a script per queue as before decision 73 (and its IdleWait
// of 1s), measured in the same run.
//
//	go test -tags bench -run TestShardFigures -v ./internal/app/
func TestShardFigures(t *testing.T) {
	type setup struct {
		name     string
		shards   int
		baseline bool
	}
	type figures struct{ idle, perOrder, p50, p99, h50, h99 float64 }
	var base figures
	for _, s := range []setup{
		{"16 shards, a script per queue (baseline)", 16, true},
		{"16 shards, gated (default)", 16, false},
		{"1 shard, a script per queue", 1, true},
		{"1 shard, gated", 1, false},
	} {
		t.Run(s.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			rdb := srv.NewClient(t)
			simSrv := httptest.NewServer(sim.New(sim.Config{}))
			t.Cleanup(simSrv.Close)
			down := downstream.Config{BaseURL: simSrv.URL}
			var mu sync.Mutex
			ended := map[string]time.Time{}
			cfg := app.Config{Redis: rdb, API: true, Worker: true, Logger: testLogger(t), QueueShards: s.shards,
				Server:    server.Config{APIKeys: map[string]string{apiKey: "acme"}},
				Portfolio: down, Execution: down}
			cfg.Webhooks.Guard = webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true} // the default retries otherwise
			got := map[string]time.Time{}
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var ev struct {
					Data struct{ ID string } `json:"data"`
				}
				json.NewDecoder(r.Body).Decode(&ev)
				mu.Lock()
				if _, ok := got[ev.Data.ID]; !ok {
					got[ev.Data.ID] = time.Now()
				}
				mu.Unlock()
			}))
			t.Cleanup(rcv.Close)
			cfg.Saga.OnTerminalFunc = func(_ context.Context, o *orders.Order) {
				mu.Lock()
				ended[o.ID] = time.Now()
				mu.Unlock()
			}
			if s.baseline {
				cfg.WorkerPool.ScriptPerQueue = true
				cfg.WorkerPool.IdleWait = time.Second
			}
			a, url := apptest.Serve(t, cfg)
			b := &bundle{app: a, url: url, rdb: rdb}
			// Every terminal event: the account runs out of funds after a while.
			b.api(t).createEndpoint(apiKey, rcv.URL, webhooks.EventTypes...)
			b.place(t, order()) // scripts loaded, pools open
			time.Sleep(3 * time.Second)

			before, _ := commandCalls(t, rdb)
			start := time.Now()
			time.Sleep(5 * time.Second) // idle: the measurement window
			after, _ := commandCalls(t, rdb)
			var f figures
			f.idle = float64(after-before) / time.Since(start).Seconds()

			const rate, secs = 200, 5
			n := rate * secs
			placed := make(map[string]time.Time, n)
			var pmu sync.Mutex
			before, _ = commandCalls(t, rdb)
			tick := time.NewTicker(time.Second / rate)
			var wg sync.WaitGroup
			for range n {
				<-tick.C
				wg.Go(func() {
					at := time.Now()
					o := b.place(t, order())
					pmu.Lock()
					placed[o.ID] = at
					pmu.Unlock()
				})
			}
			tick.Stop()
			wg.Wait()
			pollUntil(t, 60*time.Second, "orders' webhooks received", func() bool {
				mu.Lock()
				defer mu.Unlock()
				for id := range placed {
					if _, ok := got[id]; !ok {
						return false
					}
				}
				return true
			})
			after, _ = commandCalls(t, rdb)
			f.perOrder = float64(after-before) / float64(n)
			var lat, hook []float64
			mu.Lock()
			for id, at := range placed {
				lat = append(lat, float64(ended[id].Sub(at).Microseconds())/1000)
				hook = append(hook, float64(got[id].Sub(ended[id]).Microseconds())/1000)
			}
			mu.Unlock()
			slices.Sort(lat)
			slices.Sort(hook)
			f.p50, f.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
			f.h50, f.h99 = hook[len(hook)/2], hook[len(hook)*99/100]
			ratio := ""
			if s.name == "16 shards, a script per queue (baseline)" {
				base = f
			} else if base.idle > 0 {
				ratio = fmt.Sprintf("; vs baseline: idle ×%.2f, per order ×%.2f", f.idle/base.idle, f.perOrder/base.perOrder)
			}
			t.Logf("%s: idle %.1f cmds/s; at %d orders/s with a webhook each: %.1f cmds/order, 202→terminal p50 %.0f ms p99 %.0f ms, terminal→webhook p50 %.0f ms p99 %.0f ms%s",
				s.name, f.idle, rate, f.perOrder, f.p50, f.p99, f.h50, f.h99, ratio)
		})
	}
}
