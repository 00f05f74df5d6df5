package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/durability"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// replicatedBundle is the API (and, once started, the worker) on a Redis
// master with one replica, under --durability strict --redis-min-replicas 1.
func replicatedBundle(t *testing.T) (*testBundle, *redistest.Server) {
	t.Helper()
	master := redistest.Start(t, redistest.Options{})
	replica := redistest.StartReplica(t, master, redistest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr()})
	t.Cleanup(func() { rdb.Close() })
	log := slog.New(slog.DiscardHandler)
	barrier, err := durability.Check(context.Background(), rdb, durability.Config{MinReplicas: 1, Timeout: 1500 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	ds := downstream.Config{BaseURL: simSrv.URL, Timeout: 500 * time.Millisecond, Budget: time.Second}
	a, err := app.New(app.Config{Redis: rdb, API: true, Worker: true, Durability: barrier,
		Server: server.Config{APIKeys: apiKeys}, Portfolio: ds, Execution: ds, Logger: log,
		Webhooks: app.WebhooksConfig{Guard: webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true}}})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &testBundle{app: a, sim: s}), replica
}

// With a replica, an order is accepted. With the replica stopped, the
// accept answers 503 not_durable within the timeout, never a false 202;
// the order exists on the master, a retry with the same Idempotency-Key
// gets the first order (once the replica is back), not a second one, and
// the order runs to its end.
func TestNotDurableAnswers503(t *testing.T) {
	t.Parallel()
	b, replica := replicatedBundle(t)
	body := jsonOf(t, marketOrder())
	first := b.place(t, keyA, marketOrder())

	replica.Pause()
	defer replica.Resume()
	key := withHeader("Idempotency-Key", "durable-1")
	start := time.Now()
	resp, got := b.do(t, "POST", "/v1/orders", keyA, body, key)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the 503 took %s", d)
	}
	wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Error("503 without Retry-After")
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		t.Fatal("503 not_durable without the order's Location")
	}
	// The order is on the master: it exists.
	resp, got = b.do(t, "GET", loc, keyA, "")
	wantStatus(t, resp, got, http.StatusOK)
	unconfirmed := decode[orders.Order](t, got)

	// Without a key: 503 too, with its own order's Location.
	resp, got = b.do(t, "POST", "/v1/orders", keyA, body)
	wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")
	loc2 := resp.Header.Get("Location")
	if loc2 == "" || loc2 == loc {
		t.Errorf("second 503's Location %q (first %q)", loc2, loc)
	}

	// A retry with the key while the replica is still away: still 503,
	// and no second order.
	resp, got = b.do(t, "POST", "/v1/orders", keyA, body, key)
	wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")

	replica.Resume()
	// Once the replica is back, the retry gets the first order, replayed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, got = b.do(t, "POST", "/v1/orders", keyA, body, key)
		if resp.StatusCode == http.StatusAccepted {
			break
		}
		wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")
		if time.Now().After(deadline) {
			t.Fatal("the retry still answers 503 30s after the replica came back")
		}
		time.Sleep(100 * time.Millisecond) // the replica catches up: poll with a deadline
	}
	replayed := decode[orders.Order](t, got)
	if replayed.ID != unconfirmed.ID || resp.Header.Get("Idempotent-Replayed") != "true" || resp.Header.Get("Location") != loc {
		t.Errorf("retry: order %s (Idempotent-Replayed %q, Location %q); want the first, %s, replayed",
			replayed.ID, resp.Header.Get("Idempotent-Replayed"), resp.Header.Get("Location"), unconfirmed.ID)
	}
	resp, got = b.do(t, "GET", "/v1/orders", keyA, "")
	wantStatus(t, resp, got, http.StatusOK)
	if n := len(decode[server.OrderList](t, got).Data); n != 3 {
		t.Errorf("tenant has %d orders, want 3 (one accepted, two answered 503)", n)
	}
	// Every order, those answered 503 too, runs to its end.
	b.start(t)
	for _, id := range []string{first.ID, unconfirmed.ID, loc2[len("/v1/orders/"):]} {
		if o, _ := b.waitTerminal(t, keyA, id); o.Status != orders.Executed {
			t.Errorf("order %s ended %s (%s)", id, o.Status, o.Reason)
		}
	}
}

// A cancel and a webhook endpoint's creation are acknowledged writes too.
func TestNotDurableOtherWrites(t *testing.T) {
	t.Parallel()
	b, replica := replicatedBundle(t)
	o := b.place(t, keyA, marketOrder())
	replica.Pause()
	defer replica.Resume()
	resp, got := b.do(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "")
	wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")
	resp, got = b.do(t, "POST", "/v1/webhook-endpoints", keyA, `{"url":"http://127.0.0.1:9/x","events":["order.executed"]}`)
	wantProblem(t, resp, got, http.StatusServiceUnavailable, "not_durable")
	if loc := resp.Header.Get("Location"); loc == "" {
		t.Error("endpoint 503 without Location")
	}
	// Reads do not wait for the barrier.
	resp, got = b.do(t, "GET", "/v1/orders/"+o.ID, keyA, "")
	wantStatus(t, resp, got, http.StatusOK)
}
