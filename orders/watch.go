package orders

import (
	"context"
	"time"

	"github.com/asyncgate/asyncgate/internal/fanout"
)

// Watcher fans the store's change announcements out to local waiters over
// one shared pub/sub connection, so a thousand long-polls cost one
// subscription, not a thousand.
//
// Announcements can be lost while the connection is down; waiters should
// re-read the order on a slow timer as well (see Store.Wait).
type Watcher struct {
	hub *fanout.Hub
}

// Watch subscribes to the change channel until Close. The store's
// WaitForChange uses the last watcher started.
func (s *Store) Watch(ctx context.Context) *Watcher {
	w := &Watcher{hub: fanout.New(s.rdb.Subscribe(ctx, s.k.changed()))}
	s.watcher.Store(w)
	return w
}

// Subscribe returns a channel signalled after each change of the order,
// and a func that ends the subscription.
func (w *Watcher) Subscribe(tenant, id string) (<-chan struct{}, func()) {
	return w.hub.Subscribe(tenant + "/" + id)
}

// Close ends the subscription.
func (w *Watcher) Close() error { return w.hub.Close() }

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
	return w.hub.Waiters()
}
