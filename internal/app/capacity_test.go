package app_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
)

// gateReceiver is a webhook receiver that holds every request until
// released, counting the requests in flight and the webhook-ids it
// answered.
type gateReceiver struct {
	*httptest.Server
	release        chan struct{}
	inFlight, most atomic.Int64
	mu             sync.Mutex
	ids            map[string]bool
	opened         sync.Once
}

func newGateReceiver(t *testing.T) *gateReceiver {
	r := &gateReceiver{release: make(chan struct{}), ids: map[string]bool{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := r.inFlight.Add(1)
		defer r.inFlight.Add(-1)
		for m := r.most.Load(); n > m && !r.most.CompareAndSwap(m, n); m = r.most.Load() {
		}
		select {
		case <-r.release:
		case <-req.Context().Done():
			return
		}
		r.mu.Lock()
		r.ids[req.Header.Get("webhook-id")] = true
		r.mu.Unlock()
	}))
	t.Cleanup(func() {
		r.open()
		r.Close()
	})
	return r
}

// open lets every request through, the held ones and those to come.
func (r *gateReceiver) open() { r.opened.Do(func() { close(r.release) }) }

func (r *gateReceiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// TestSlowEndpointDoesNotSlowOtherTenants: one tenant's receiver holds
// every request. Its deliveries take at most --webhook-endpoint-concurrency
// slots, the rest wait in Redis; another tenant's orders end and their
// webhooks arrive meanwhile, as fast as ever; when the receiver answers
// again, every held event is delivered. With one Asynq server for orders
// and webhooks, or without the endpoint cap, the slow receiver's
// deliveries take every slot and the other tenant's orders (or webhooks)
// wait for it.
func TestSlowEndpointDoesNotSlowOtherTenants(t *testing.T) {
	t.Parallel()
	const endpointCap, slowEvents = 2, 8
	b := setup(t, fastWebhooks, func(c *app.Config) {
		// As many order slots as the slow endpoint may hold: shared, they
		// would all be the slow receiver's.
		c.WorkerPool.Concurrency = endpointCap
		c.WorkerPool.WebhookConcurrency = 2 * endpointCap
		c.Webhooks.Deliverer.EndpointConcurrency = endpointCap
		c.Webhooks.Deliverer.Timeout = time.Minute // the held requests must not time out
	})
	a := b.api(t)
	slow := newGateReceiver(t)
	fast := newHookReceiver(t)
	a.createEndpoint(apiKey, slow.URL+"/slow")
	a.createEndpoint(otherKey, fast.URL+"/fast")

	for range slowEvents {
		b.place(t, order())
	}
	pollUntil(t, 30*time.Second, "the slow receiver holding its cap of requests", func() bool { return slow.inFlight.Load() == endpointCap })

	// Another tenant's orders end, and its webhooks arrive, within a bound
	// the held receiver would break: it never answers until released.
	const bound = 10 * time.Second
	var slowest time.Duration
	for i := range 4 {
		start := time.Now()
		r := b.do(t, "POST", "/v1/orders", otherKey, order())
		if r.status != http.StatusAccepted {
			t.Fatalf("place for globex: %d %s", r.status, r.body)
		}
		o := r.order(t)
		for {
			r := b.do(t, "GET", "/v1/orders/"+o.ID+"?wait=2s", otherKey, nil)
			if r.status != http.StatusOK {
				t.Fatalf("get order: %d %s", r.status, r.body)
			}
			if r.order(t).Status.Terminal() {
				break
			}
			if time.Since(start) > bound {
				t.Fatalf("globex order %d not terminal %s after it was placed, while acme's receiver is slow", i, bound)
			}
		}
		select {
		case h := <-fast.hits:
			if ev := decodeEvent(t, h); ev.Data.ID != o.ID {
				t.Fatalf("globex webhook for %s, want %s", ev.Data.ID, o.ID)
			}
		case <-time.After(bound - time.Since(start)):
			t.Fatalf("globex webhook %d not received %s after its order was placed, while acme's receiver is slow", i, bound)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("globex: placement to webhook at most %s while acme's receiver held %d requests", slowest.Round(time.Millisecond), slow.inFlight.Load())
	if m := slow.most.Load(); m > endpointCap {
		t.Fatalf("the slow receiver had %d requests in flight at once, want at most %d", m, endpointCap)
	}

	// The receiver recovers: every held event arrives, nothing is lost.
	slow.open()
	pollUntil(t, 90*time.Second, "every event of the slow receiver delivered", func() bool { return slow.delivered() == slowEvents })
	if m := slow.most.Load(); m > endpointCap {
		t.Fatalf("the slow receiver had %d requests in flight at once, want at most %d", m, endpointCap)
	}
}

// TestBurstToOneFastEndpointIsNotPostponed: 200 orders end at once and
// their webhooks go to one endpoint whose receiver answers in 5 ms, through
// its 4 slots. The deliveries queue in the worker for a slot (decision 87)
// instead of finding the slots full and being postponed: with the
// postponement set to 30 s, every webhook arriving within 25 s proves that
// none was postponed. The local wait is generous here (5 s) so that a
// loaded machine does not turn a slow attempt into a postponement; the
// webhooks package checks that without the local wait the same burst is
// postponed.
func TestBurstToOneFastEndpointIsNotPostponed(t *testing.T) {
	t.Parallel()
	const orders = 200
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Webhooks.Deliverer.EndpointConcurrency = 4
		c.Webhooks.Deliverer.SlotWait = 30 * time.Second
		c.Webhooks.Deliverer.SlotLocalWait = 5 * time.Second
	})
	a := b.api(t)
	rcv := newHookReceiver(t)
	var inFlight, most atomic.Int64
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond)
	})
	var mu sync.Mutex
	ids := map[string]bool{}
	go func() {
		for h := range rcv.hits {
			mu.Lock()
			ids[h.header.Get("webhook-id")] = true
			mu.Unlock()
		}
	}()
	a.createEndpoint(apiKey, rcv.URL+"/hooks")
	for range orders {
		b.place(t, order())
	}
	pollUntil(t, 25*time.Second, "a webhook for every order, none postponed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ids) == orders
	})
	if m := most.Load(); m > 4 {
		t.Fatalf("the receiver had %d requests in flight at once, want at most 4", m)
	}
	t.Logf("%d webhooks (%d requests), at most %d in flight", orders, rcv.count.Load(), most.Load())
}
