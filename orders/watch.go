package orders

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Watcher fans the store's change announcements out to local waiters over
// one shared pub/sub connection, so a thousand long-polls cost one
// subscription, not a thousand.
//
// Announcements can be lost while the connection is down; waiters should
// re-read the order on a slow timer as well (see Store.Wait).
type Watcher struct {
	ps      *redis.PubSub
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
	done    chan struct{}
}

// Watch subscribes to the change channel until Close. The store's
// WaitForChange uses the last watcher started.
func (s *Store) Watch(ctx context.Context) *Watcher {
	w := &Watcher{
		ps:      s.rdb.Subscribe(ctx, s.k.changed()),
		waiters: make(map[string]map[chan struct{}]struct{}),
		done:    make(chan struct{}),
	}
	go w.run()
	s.watcher.Store(w)
	return w
}

func (w *Watcher) run() {
	defer close(w.done)
	for m := range w.ps.Channel() {
		w.mu.Lock()
		for ch := range w.waiters[m.Payload] {
			select {
			case ch <- struct{}{}:
			default: // a signal is already pending
			}
		}
		w.mu.Unlock()
	}
}

// Subscribe returns a channel signalled after each change of the order,
// and a func that ends the subscription.
func (w *Watcher) Subscribe(tenant, id string) (<-chan struct{}, func()) {
	key := tenant + "/" + id
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.waiters[key] == nil {
		w.waiters[key] = make(map[chan struct{}]struct{})
	}
	w.waiters[key][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.waiters[key], ch)
		if len(w.waiters[key]) == 0 {
			delete(w.waiters, key)
		}
		w.mu.Unlock()
	}
}

// Close ends the subscription.
func (w *Watcher) Close() error {
	err := w.ps.Close()
	<-w.done
	return err
}

// WaitForChange returns the order once its status differs from known (when
// known is empty: from the status it has when called), or when ctx ends
// (then with the current order and no error). Without a running [Watcher]
// it polls; with one, StoreConfig.PollInterval only bounds how long a lost
// announcement can delay the answer.
func (s *Store) WaitForChange(ctx context.Context, tenant, id string, known Status) (*Order, error) {
	var ch <-chan struct{}
	if w := s.watcher.Load(); w != nil {
		c, cancel := w.Subscribe(tenant, id)
		defer cancel()
		ch = c
	}
	poll := s.poll
	// The first read must answer even if the wait is already over.
	o, err := s.Get(context.WithoutCancel(ctx), tenant, id)
	if err != nil || o.Status.Terminal() || (known != "" && o.Status != known) {
		return o, err
	}
	start := o.Status
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return o, nil
		case <-ch:
		case <-t.C:
		}
		cur, err := s.Get(context.WithoutCancel(ctx), tenant, id)
		if err != nil {
			return nil, err
		}
		o = cur
		if o.Status != start {
			return o, nil
		}
	}
}

// Waiters counts the subscriptions of the store's watcher (for tests and metrics).
func (s *Store) Waiters() int {
	w := s.watcher.Load()
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.waiters {
		n += len(m)
	}
	return n
}
