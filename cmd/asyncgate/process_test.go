package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

var binary string

func TestMain(m *testing.M) {
	bin, cleanup, err := proctest.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

const key = "proc-key-0123456789abcdef"

// apiOnly starts an in-process API (no worker) on rdb.
func apiOnly(t *testing.T, redisURL string) string {
	t.Helper()
	rdb, err := app.NewRedis(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Config{Redis: rdb, API: true, Server: server.Config{APIKeys: map[string]string{key: "acme"}},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Shutdown(context.Background()); rdb.Close() })
	return srv.URL
}

// startWorker runs `asyncgate worker` as a child process.
func startWorker(t *testing.T, redisURL, simURL string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, binary, proctest.WorkerArgs(redisURL, simURL)...)
}

func place(t *testing.T, url string) (string, int) {
	t.Helper()
	body := `{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":1,"type":"market"}`
	req, _ := http.NewRequest("POST", url+"/v1/orders", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0
	}
	defer res.Body.Close()
	var o orders.Order
	json.NewDecoder(res.Body).Decode(&o)
	return o.ID, res.StatusCode
}

// waitTerminal long-polls until the order ends.
func waitTerminal(t *testing.T, url, id string, deadline time.Time) orders.Order {
	t.Helper()
	for {
		req, _ := http.NewRequest("GET", url+"/v1/orders/"+id+"?wait=10s", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		var o orders.Order
		if err == nil {
			if res.StatusCode == http.StatusOK {
				json.NewDecoder(res.Body).Decode(&o)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		if o.Status.Terminal() {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s is %q at the deadline (err %v)", id, o.Status, err)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond) // the server is away: back off before asking again
		}
	}
}

// A worker process killed with SIGKILL in the middle of orders: once a new
// worker runs, every order completes, each executed exactly once.
func TestWorkerKilledMidOrder(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{})
	redisURL := rs.URL(0)
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	// Executions hang, so the worker dies with orders mid-execution.
	s.SetFaults(sim.Execution, sim.Faults{Latency: time.Hour})
	api := apiOnly(t, redisURL)

	w1 := startWorker(t, redisURL, simSrv.URL)
	var ids []string
	for range 5 {
		id, code := place(t, api)
		if code != http.StatusAccepted {
			t.Fatalf("place: %d", code)
		}
		ids = append(ids, id)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().ExecuteRequests < len(ids) {
		if time.Now().After(deadline) {
			t.Fatalf("executions started: %d of %d", s.Stats().ExecuteRequests, len(ids))
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: the sim has no event for this
	}
	w1.Kill() // SIGKILL: no shutdown, no cleanup
	s.ClearFaults()
	startWorker(t, redisURL, simSrv.URL)
	// The reconciler resumes the orders once their lease expired (--resume-after, 30s by
	// default); Asynq's recoverer would take 30 to 90 s.
	end := time.Now().Add(150 * time.Second)
	for _, id := range ids {
		o := waitTerminal(t, api, id, end)
		if o.Status != orders.Executed {
			t.Errorf("order %s ended %s (%s)", id, o.Status, o.Reason)
		}
		if n := s.Executions(id); n != 1 {
			t.Errorf("order %s executed %d times", id, n)
		}
	}
}

// A worker killed with SIGKILL mid-order: another worker resumes its orders
// within --resume-after (its lease, then the reconciler's check), not when
// Asynq's recoverer gives the tasks back (30 to 90 s). The bound is low here
// to keep the test fast.
func TestWorkerKilledResumesWithinBound(t *testing.T) {
	t.Parallel()
	const bound, slack = 10 * time.Second, 15 * time.Second // slack: process start, a loaded machine
	rs := redistest.Start(t, redistest.Options{})
	redisURL := rs.URL(0)
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	s.SetFaults(sim.Execution, sim.Faults{Latency: time.Hour}) // the worker dies mid-execution
	api := apiOnly(t, redisURL)
	args := func() []string { return proctest.WorkerArgs(redisURL, simSrv.URL, "--resume-after", bound.String()) }

	w1 := proctest.Start(t, binary, args()...)
	var ids []string
	for range 3 {
		id, code := place(t, api)
		if code != http.StatusAccepted {
			t.Fatalf("place: %d", code)
		}
		ids = append(ids, id)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().ExecuteRequests < len(ids) {
		if time.Now().After(deadline) {
			t.Fatalf("executions started: %d of %d", s.Stats().ExecuteRequests, len(ids))
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: the sim has no event for this
	}
	w1.Kill()
	killed := time.Now()
	s.ClearFaults()
	proctest.Start(t, binary, args()...)
	for _, id := range ids {
		o := waitTerminal(t, api, id, killed.Add(120*time.Second))
		if o.Status != orders.Executed {
			t.Errorf("order %s ended %s (%s)", id, o.Status, o.Reason)
		}
		if n := s.Executions(id); n != 1 {
			t.Errorf("order %s executed %d times", id, n)
		}
	}
	took := time.Since(killed)
	t.Logf("orders of the killed worker done %v after the kill (bound %v)", took.Round(100*time.Millisecond), bound)
	if took > bound+slack {
		t.Errorf("the orders resumed %v after the kill, want at most %v + %v", took.Round(100*time.Millisecond), bound, slack)
	}
}

// Redis killed and restarted (AOF on) while orders are in flight: every
// order that got a 202 reaches a terminal status; none is lost.
func TestRedisRestartLosesNothing(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{AOF: true})
	rdb, err := app.NewRedis(rs.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := sim.New(sim.Config{})
	s.SetFaults(sim.Execution, sim.Faults{Latency: 20 * time.Millisecond})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	down := downstream.Config{BaseURL: simSrv.URL}
	a, err := app.New(app.Config{Redis: rdb, API: true, Worker: true,
		Server:    server.Config{APIKeys: map[string]string{key: "acme"}},
		Portfolio: down, Execution: down,
		Saga:       jobs.SagaConfig{RetryBase: 50 * time.Millisecond, RetryMax: time.Second},
		Reconciler: jobs.ReconcilerConfig{Interval: time.Second, Grace: 2 * time.Second},
		Logger:     slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Shutdown(context.Background()) })

	var mu sync.Mutex
	var accepted []string
	refused := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id, code := place(t, srv.URL)
				mu.Lock()
				if code == http.StatusAccepted {
					accepted = append(accepted, id)
				} else {
					refused++
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	for count() < 50 {
		time.Sleep(10 * time.Millisecond) // poll with a deadline below
	}
	rs.Kill()
	time.Sleep(500 * time.Millisecond) // Redis stays away for a while: that is the scenario
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	before := count()
	for count() < before+50 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("accepted %d orders, %d refused while Redis was away", len(accepted), refused)
	end := time.Now().Add(150 * time.Second)
	for _, id := range accepted {
		o := waitTerminal(t, srv.URL, id, end)
		if o.Status != orders.Executed {
			t.Errorf("order %s ended %s (%s)", id, o.Status, o.Reason)
		}
		if n := s.Executions(id); n != 1 {
			t.Errorf("order %s executed %d times", id, n)
		}
	}
}
