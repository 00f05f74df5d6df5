package webhooks_test

import (
	"context"
	"fmt"
	"github.com/redis/go-redis/v9"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/webhooks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// clock is a settable clock that starts at the real time, so that
// signatures it dates still verify with libraries that read time.Now.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time            { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration)   { c.offset.Add(int64(d)) }
func (c *clock) nowFunc() func() time.Time { return c.now }

// resolver is a DNS that tests rewrite, to simulate DNS answers and their
// changes (rebinding).
type resolver struct {
	mu    sync.Mutex
	hosts map[string][]netip.Addr
}

func newResolver(hosts map[string]string) *resolver {
	r := &resolver{hosts: map[string][]netip.Addr{}}
	for h, ips := range hosts {
		r.set(h, ips)
	}
	return r
}

// set makes host resolve to the comma-separated addresses.
func (r *resolver) set(host string, ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	r.hosts[host] = addrs
}

func (r *resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ips, ok := r.hosts[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// request is what a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a real HTTP server on 127.0.0.1 that records every request
// and answers with its handler (200 by default).
type receiver struct {
	*httptest.Server
	got     chan request
	mu      sync.Mutex
	handler http.HandlerFunc
	count   atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{got: make(chan request, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.count.Add(1)
		select {
		case r.got <- request{req.Header.Clone(), body}:
		default:
		}
		r.mu.Lock()
		h := r.handler
		r.mu.Unlock()
		if h == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		h(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

// answer makes the receiver answer with h from now on.
func (r *receiver) answer(h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handler = h
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// next returns the next request the receiver got, or fails the test.
func (r *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case req := <-r.got:
		return req
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver got no request within 10s")
		return request{}
	}
}

// devGuard is the guard of `asyncgate dev`: plain http and loopback allowed.
func devGuard() *webhooks.Guard {
	return webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true})
}

// testBundle is a store on a fresh Redis database and a deliverer, with a
// settable clock.
type testBundle struct {
	rdb       *redis.Client
	store     *webhooks.Store
	deliverer *webhooks.Deliverer
	clock     *clock
}

type options struct {
	store     webhooks.StoreConfig
	deliverer webhooks.DelivererConfig
}

func setup(t *testing.T, opts ...func(*options)) *testBundle {
	t.Helper()
	b := &testBundle{clock: &clock{}}
	o := options{
		store:     webhooks.StoreConfig{Guard: devGuard(), Now: b.clock.nowFunc(), MaxAttempts: 3},
		deliverer: webhooks.DelivererConfig{Schedule: []time.Duration{time.Minute, 2 * time.Minute}, Jitter: -1, Timeout: 5 * time.Second, Now: b.clock.nowFunc()},
	}
	for _, f := range opts {
		f(&o)
	}
	b.rdb = redistest.Shared(t).NewClient(t)
	redistest.CheckSlots(t, b.rdb) // every script and MULTI in one slot, as on a Redis Cluster
	b.store = webhooks.NewStore(b.rdb, o.store)
	d, err := webhooks.NewDeliverer(b.store, o.deliverer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	b.deliverer = d
	return b
}

// endpoint registers an endpoint for the tenant.
func (b *testBundle) endpoint(t *testing.T, tenant, url string, events ...string) (*webhooks.Endpoint, webhooks.Secret) {
	t.Helper()
	ep, secret, err := b.store.CreateEndpoint(context.Background(), tenant, webhooks.EndpointInput{URL: url, Events: events})
	if err != nil {
		t.Fatalf("create endpoint %s: %v", url, err)
	}
	return ep, secret
}

var eventSeq atomic.Int64

// publish publishes a new order.executed event for the tenant and returns
// the deliveries to schedule.
func (b *testBundle) publish(t *testing.T, tenant, callbackURL string) (*webhooks.Event, []webhooks.Ref) {
	t.Helper()
	n := eventSeq.Add(1)
	orderID := fmt.Sprintf("0190f1a2-7b3c-7d4e-8f90-%012d", n)
	ev := &webhooks.Event{
		ID: webhooks.EventID(tenant, orderID, 4), Type: webhooks.EventOrderExecuted, CreatedAt: b.clock.now().UTC(), Sequence: 4,
		Data: []byte(`{"id":"` + orderID + `","status":"executed"}`),
	}
	refs, err := b.store.Publish(context.Background(), tenant, ev, callbackURL)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ev, refs
}

// deliver runs one delivery task's worth of work.
func (b *testBundle) deliver(t *testing.T, r webhooks.Ref) webhooks.Result {
	t.Helper()
	res, err := b.deliverer.Deliver(context.Background(), r)
	if err != nil {
		t.Fatalf("deliver: %v", err)
	}
	return res
}

func (b *testBundle) delivery(t *testing.T, r webhooks.Ref) *webhooks.Delivery {
	t.Helper()
	d, err := b.store.Delivery(context.Background(), r.Tenant, r.DeliveryID)
	if err != nil {
		t.Fatalf("read delivery: %v", err)
	}
	return d
}

func one(t *testing.T, refs []webhooks.Ref) webhooks.Ref {
	t.Helper()
	if len(refs) != 1 {
		t.Fatalf("got %d deliveries, want 1: %+v", len(refs), refs)
	}
	return refs[0]
}
