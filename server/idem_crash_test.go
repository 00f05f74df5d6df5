package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
	"github.com/asyncgate/asyncgate/webhooks"
)

// first202RetryAfter is the Retry-After of a 202 with the default Config.
const first202RetryAfter = "1"

// dyingStore stores the order, then, once, ends the request where it stands
// as a SIGKILL of the API process would: the goroutine exits, so nothing
// after the store's write runs: no answer, nothing recorded, no claim
// released.
type dyingStore struct {
	server.OrderStore
	die atomic.Bool
}

func (s *dyingStore) CreateBound(ctx context.Context, o *orders.Order, b orders.Binding) (*orders.Order, bool, error) {
	created, bound, err := s.OrderStore.CreateBound(ctx, o, b)
	if err == nil && s.die.CompareAndSwap(true, false) {
		runtime.Goexit()
	}
	return created, bound, err
}

func (s *dyingStore) RequestCancel(ctx context.Context, tenant, id string) error {
	err := s.OrderStore.RequestCancel(ctx, tenant, id)
	if err == nil && s.die.CompareAndSwap(true, false) {
		runtime.Goexit()
	}
	return err
}

// TestIdempotencyCrashAfterCreate: a request that dies right after the order
// is stored (before its answer is recorded) leaves the key bound to that
// order. The client's honest retry with the key, after the claim's TTL,
// gets that order, replayed as the first answer would have been, and no
// second order is placed. Before the binding was written with the order,
// the retry found the key free and placed the order again.
func TestIdempotencyCrashAfterCreate(t *testing.T) {
	t.Parallel()
	ds := &dyingStore{}
	ds.die.Store(true)
	const claimTTL = 200 * time.Millisecond
	b := setupContract(t, server.Config{IdempotencyClaimTTL: claimTTL}, func(s server.OrderStore) server.OrderStore {
		ds.OrderStore = s
		return ds
	})
	body := jsonOf(t, marketOrder())
	if a, err := b.send(t, t.Context(), "POST", "/v1/orders", keyA, body, "Idempotency-Key", "crash-1"); err == nil {
		t.Fatalf("the dying request was answered: %d %s", a.status, a.body)
	}
	if ds.die.Load() {
		t.Fatal("the request did not reach the store")
	}

	// The retry, polled past the claim's TTL (as long as the claim held, a
	// retry would get 409 in use).
	var retry answer
	for deadline := time.Now().Add(10 * time.Second); ; {
		retry = b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "crash-1")
		if retry.status != http.StatusConflict {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the retry still gets 409 after 10 s")
		}
		time.Sleep(claimTTL / 4) // poll: the claim's expiry is Redis's
	}
	retry.want(t, http.StatusAccepted)
	if got := b.countOrders(t, keyA); got != 1 {
		t.Fatalf("%d orders stored after the retry, want 1", got)
	}
	list := b.must(t, "GET", "/v1/orders", keyA, "")
	stored := decode[server.OrderList](t, list.body).Data[0]
	o := decode[orders.Order](t, retry.body)
	if o.ID != stored.ID || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: order %s (Idempotent-Replayed %q), want the stored %s, replayed", o.ID, retry.header.Get("Idempotent-Replayed"), stored.ID)
	}
	// The answer the first request would have sent: the order as accepted.
	if o.Status != orders.Pending || o.Version != 1 || !o.UpdatedAt.Equal(o.CreatedAt) {
		t.Errorf("replayed order: status %s, version %d; want pending, 1", o.Status, o.Version)
	}
	for h, want := range map[string]string{"Location": "/v1/orders/" + stored.ID, "Content-Type": "application/json", "Retry-After": first202RetryAfter} {
		if got := retry.header.Get(h); got != want {
			t.Errorf("replay %s %q, want %q", h, got, want)
		}
	}
	// The binding is kept as long as an answer (24 h by default).
	if ttl := b.rdb.PTTL(t.Context(), "ag:{tenant-a}:idem:crash-1").Val(); ttl < 23*time.Hour {
		t.Errorf("the key's binding expires in %v, want about 24h", ttl)
	}
	// Another body with the key: 422, as for any recorded answer.
	changed := marketOrder()
	changed.Quantity = 3
	b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, changed), "Idempotency-Key", "crash-1").wantCode(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	// Every replay is the same answer.
	again := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "crash-1")
	again.want(t, http.StatusAccepted)
	if !bytes.Equal(again.body, retry.body) {
		t.Errorf("second replay differs:\n%s\nwant\n%s", again.body, retry.body)
	}
}

// TestIdempotencyReplayAfterOrderMoved: a replay is the answer the order
// was accepted with (pending, version 1), not the order as it is now.
func TestIdempotencyReplayAfterOrderMoved(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	body := jsonOf(t, marketOrder())
	first := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "moved-1")
	first.want(t, http.StatusAccepted)
	o := decode[orders.Order](t, first.body)
	b.must(t, "POST", "/v1/orders/"+o.ID+"/cancel", keyA, "").want(t, http.StatusAccepted)
	a := b.must(t, "POST", "/v1/orders", keyA, body, "Idempotency-Key", "moved-1")
	a.want(t, http.StatusAccepted)
	if !bytes.Equal(a.body, first.body) || a.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay after the order moved on:\n%s\nwant\n%s", a.body, first.body)
	}
}

// TestIdempotencyCrashAfterCancel: a cancel request that dies right after
// the store recorded it leaves only its claim; the retry after the claim's
// TTL runs the request again, which is harmless: the store's cancel is
// idempotent (one order.cancel_requested, the same 202).
func TestIdempotencyCrashAfterCancel(t *testing.T) {
	t.Parallel()
	ds := &dyingStore{}
	const claimTTL = 200 * time.Millisecond
	b := setupContract(t, server.Config{IdempotencyClaimTTL: claimTTL}, func(s server.OrderStore) server.OrderStore {
		ds.OrderStore = s
		return ds
	})
	placed := b.must(t, "POST", "/v1/orders", keyA, jsonOf(t, marketOrder()))
	placed.want(t, http.StatusAccepted)
	id := decode[orders.Order](t, placed.body).ID
	ds.die.Store(true)
	if a, err := b.send(t, t.Context(), "POST", "/v1/orders/"+id+"/cancel", keyA, "", "Idempotency-Key", "cancel-crash"); err == nil {
		t.Fatalf("the dying request was answered: %d %s", a.status, a.body)
	}
	var retry answer
	for deadline := time.Now().Add(10 * time.Second); ; {
		retry = b.must(t, "POST", "/v1/orders/"+id+"/cancel", keyA, "", "Idempotency-Key", "cancel-crash")
		if retry.status != http.StatusConflict {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the retry still gets 409 after 10 s")
		}
		time.Sleep(claimTTL / 4) // poll: the claim's expiry is Redis's
	}
	retry.want(t, http.StatusAccepted)
	if o := decode[orders.Order](t, retry.body); o.ID != id || !o.CancelRequested {
		t.Errorf("retry: order %s, cancel_requested %t; want %s, true", o.ID, o.CancelRequested, id)
	}
	evs := b.must(t, "GET", "/v1/orders/"+id+"/events", keyA, "")
	evs.want(t, http.StatusOK)
	n := 0
	for _, e := range decode[server.EventList](t, evs.body).Data {
		if e.Type == orders.EventCancelRequested {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d order.cancel_requested events, want 1", n)
	}
}

// dyingWebhooks registers the endpoint, then, once, ends the request where
// it stands, as dyingStore does.
type dyingWebhooks struct {
	server.WebhookStore
	die atomic.Bool
}

func (s *dyingWebhooks) CreateEndpointBound(ctx context.Context, tenant string, in webhooks.EndpointInput, bind func(*webhooks.Endpoint, webhooks.Secret) webhooks.Binding) (*webhooks.Endpoint, webhooks.Secret, bool, error) {
	ep, secret, bound, err := s.WebhookStore.CreateEndpointBound(ctx, tenant, in, bind)
	if err == nil && s.die.CompareAndSwap(true, false) {
		runtime.Goexit()
	}
	return ep, secret, bound, err
}

// TestIdempotencyCrashAfterCreateEndpoint: as for orders, a request that
// dies right after the endpoint is stored leaves the key bound to its 201
// (secret included, as a recorded answer holds it); the retry gets that
// endpoint and its secret, and no second endpoint is registered.
func TestIdempotencyCrashAfterCreateEndpoint(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	store := webhooks.NewStore(rdb, webhooks.StoreConfig{Guard: webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true})})
	dw := &dyingWebhooks{WebhookStore: store}
	dw.die.Store(true)
	const claimTTL = 200 * time.Millisecond
	api, err := server.New(server.Config{APIKeys: apiKeys, IdempotencyClaimTTL: claimTTL, Logger: slog.New(slog.DiscardHandler)},
		server.Deps{Orders: orders.NewStore(rdb, orders.StoreConfig{}), Queue: contractQueue{}, Redis: okPinger{}, RedisClient: rdb, Webhooks: dw})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	b := &contractBundle{url: srv.URL, rdb: rdb}
	body := jsonOf(t, webhooks.EndpointInput{URL: "http://127.0.0.1:9/hooks"})
	if a, err := b.send(t, t.Context(), "POST", "/v1/webhook-endpoints", keyA, body, "Idempotency-Key", "ep-crash"); err == nil {
		t.Fatalf("the dying request was answered: %d %s", a.status, a.body)
	}
	var retry answer
	for deadline := time.Now().Add(10 * time.Second); ; {
		retry = b.must(t, "POST", "/v1/webhook-endpoints", keyA, body, "Idempotency-Key", "ep-crash")
		if retry.status != http.StatusConflict {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the retry still gets 409 after 10 s")
		}
		time.Sleep(claimTTL / 4) // poll: the claim's expiry is Redis's
	}
	retry.want(t, http.StatusCreated)
	eps, err := store.Endpoints(t.Context(), "tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 {
		t.Fatalf("%d endpoints after the retry, want 1", len(eps))
	}
	got := decode[server.EndpointWithSecret](t, retry.body)
	if got.ID != eps[0].ID || got.Secret == "" || retry.header.Get("Idempotent-Replayed") != "true" ||
		retry.header.Get("Location") != "/v1/webhook-endpoints/"+eps[0].ID {
		t.Errorf("retry: endpoint %s (Idempotent-Replayed %q, Location %q), want the stored %s, replayed",
			got.ID, retry.header.Get("Idempotent-Replayed"), retry.header.Get("Location"), eps[0].ID)
	}
	// The secret replayed is the one that signs.
	if stored := rdb.HGet(t.Context(), "ag:{tenant-a}:wh:ep:"+eps[0].ID, "secret").Val(); got.Secret != stored {
		t.Errorf("replayed secret %q is not the endpoint's (%q)", got.Secret, stored)
	}
}
