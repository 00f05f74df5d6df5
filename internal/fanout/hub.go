// Package fanout hands the announcements of one Redis pub/sub subscription
// out to local waiters keyed by the message payload, so that a thousand
// waiters in a process cost one subscription, not a thousand.
//
// It is a leaf: it imports only the Redis client, and orders and webhooks
// both build on it.
package fanout

import (
	"sync"

	"github.com/redis/go-redis/v9"
)

// Hub delivers each message of a subscription to the waiters subscribed to
// its payload. Signals coalesce: a waiter that has not yet taken the last
// signal gets no second one. Announcements can be lost while the
// connection is down; waiters should re-read on a slow timer as well.
type Hub struct {
	ps      *redis.PubSub
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
	done    chan struct{}
}

// New starts fanning out the messages of ps until Close.
func New(ps *redis.PubSub) *Hub {
	h := &Hub{
		ps:      ps,
		waiters: make(map[string]map[chan struct{}]struct{}),
		done:    make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *Hub) run() {
	defer close(h.done)
	for m := range h.ps.Channel() {
		h.mu.Lock()
		for ch := range h.waiters[m.Payload] {
			select {
			case ch <- struct{}{}:
			default: // a signal is already pending
			}
		}
		h.mu.Unlock()
	}
}

// Subscribe returns a channel signalled after each message whose payload
// is key, and a func that ends the subscription.
func (h *Hub) Subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.waiters[key] == nil {
		h.waiters[key] = make(map[chan struct{}]struct{})
	}
	h.waiters[key][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.waiters[key], ch)
		if len(h.waiters[key]) == 0 {
			delete(h.waiters, key)
		}
		h.mu.Unlock()
	}
}

// Waiters counts the live subscriptions over all keys.
func (h *Hub) Waiters() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.waiters {
		n += len(m)
	}
	return n
}

// Close ends the pub/sub subscription and waits for the fan-out to stop.
func (h *Hub) Close() error {
	err := h.ps.Close()
	<-h.done
	return err
}
