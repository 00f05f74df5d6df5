package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/server"
)

// BenchmarkAcceptWithContract measures the accept path (POST /v1/orders:
// store the order, enqueue its task, answer 202) over HTTP on real Redis,
// with the integrator's contract off and on, in the same run:
//
//   - off: a configured key (an in-process lookup), no rate limit, no
//     Idempotency-Key;
//   - on: a key issued into Redis (cached after the first request), a rate
//     limit that never bites, and a fresh Idempotency-Key on every request,
//     as the SDK sends.
//
// Each iteration places one order each way, alternately, and times both,
// so that a machine whose load drifts during the run (CI, shared hosts)
// weighs on both alike. "serial" is one request at a time (latency);
// "parallel" keeps 8×GOMAXPROCS requests in flight (throughput). The
// metrics are µs per request off and on, and their ratio; the target is
// on/off ≤ 1.25.
func BenchmarkAcceptWithContract(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			off, on := acceptBench(b, false), acceptBench(b, true)
			var offNs, onNs atomic.Int64
			pair := func() {
				t0 := time.Now()
				off()
				t1 := time.Now()
				on()
				offNs.Add(int64(t1.Sub(t0)))
				onNs.Add(int64(time.Since(t1)))
			}
			runPairs(b, mode, pair)
			n := float64(b.N)
			b.ReportMetric(float64(offNs.Load())/n/1e3, "off-µs/req")
			b.ReportMetric(float64(onNs.Load())/n/1e3, "on-µs/req")
			b.ReportMetric(float64(onNs.Load())/float64(offNs.Load()), "on/off")
		})
	}
}

// acceptBench serves an API on a fresh Redis database and returns a
// function that places one order and fails b unless it gets a 202.
func acceptBench(b *testing.B, contract bool) func() {
	b.Helper()
	rdb := redistest.Shared(b).NewClient(b)
	cfg := server.Config{APIKeys: apiKeys}
	if contract {
		cfg.RateLimit = server.RateLimit{Rate: 1_000_000_000, Period: time.Second}
	}
	a, err := app.New(app.Config{Redis: rdb, API: true, Server: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	key := keyA
	var edit func(*http.Request)
	if contract {
		_, secret, err := a.Keys.Create(b.Context(), apikeys.CreateParams{Tenant: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		key = secret.Reveal()
		var seq atomic.Int64
		prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
		edit = func(req *http.Request) {
			req.Header.Set("Idempotency-Key", prefix+strconv.FormatInt(seq.Add(1), 10))
		}
	}
	post := orderPoster(b, a, key, edit)
	return func() {
		resp := post()
		if resp != nil && (resp.StatusCode != http.StatusAccepted || (contract && resp.Header.Get("RateLimit-Limit") == "")) {
			b.Errorf("status %d, RateLimit-Limit %q", resp.StatusCode, resp.Header.Get("RateLimit-Limit"))
		}
	}
}

// runPairs runs pair b.N times: one at a time ("serial"), or with
// 8×GOMAXPROCS goroutines ("parallel"), reporting allocations.
func runPairs(b *testing.B, mode string, pair func()) {
	b.ReportAllocs()
	if mode == "serial" {
		for b.Loop() {
			pair()
		}
		return
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pair()
		}
	})
}

// orderPoster serves a's handler on a loopback port until b ends and
// returns a function that POSTs one order to /v1/orders with key as Bearer
// (edit, when not nil, may change the request first) and returns the
// answer, its body read and closed; on a transport error it fails b and
// returns nil.
func orderPoster(b *testing.B, a *app.App, key string, edit func(*http.Request)) func() *http.Response {
	b.Helper()
	srv := httptest.NewServer(a.Handler())
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 512
	c := &http.Client{Transport: tr}
	b.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		a.Shutdown(context.Background())
	})
	body := []byte(`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market"}`)
	return func() *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/orders", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if edit != nil {
			edit(req)
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Error(err)
			return nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
}
