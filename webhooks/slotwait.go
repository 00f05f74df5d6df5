package webhooks

import (
	"context"
	"sync"
	"time"
)

// localSlots is a process-local counting semaphore per target (an endpoint,
// or one tenant's callback URLs), of the same cap as the slots in Redis. A
// delivery takes a local slot, waiting a short bound for one, before its
// begin script takes the Redis slot: within one worker process the deliveries
// to an endpoint queue here for milliseconds instead of finding the Redis
// slots full and being postponed by a second or more (decision 87). The
// Redis slots stay the cap across processes and the safety against a killed
// worker; the local ones only order this process's attempts.
type localSlots struct {
	max int
	mu  sync.Mutex
	m   map[localKey]*localSem
}

type localKey struct{ tenant, endpoint string }

// localSem is one target's semaphore; refs counts its holders and waiters,
// and the entry is dropped when it falls to zero, so the map holds only the
// targets with deliveries in this process now.
type localSem struct {
	ch   chan struct{}
	refs int
	// hold is a moving average of how long this process's deliveries held
	// a slot of the target (guarded by localSlots.mu).
	hold time.Duration
}

func newLocalSlots(max int) *localSlots {
	return &localSlots{max: max, m: map[localKey]*localSem{}}
}

// acquire takes one of r's target's local slots, waiting at most wait (or
// until ctx ends). It returns the function that gives the slot back, or nil
// when none came free in time.
func (l *localSlots) acquire(ctx context.Context, r Ref, wait time.Duration) (release func()) {
	k := localKey{r.Tenant, r.EndpointID}
	l.mu.Lock()
	s := l.m[k]
	if s == nil {
		if len(l.m) >= maxIdleTargets {
			l.sweep()
		}
		s = &localSem{ch: make(chan struct{}, l.max)}
		l.m[k] = s
	}
	s.refs++
	// A target whose deliveries hold their slots longer than the bound (a
	// slow receiver) would only make a waiter give up after it: such a
	// delivery is postponed at once, as without the local wait, and holds
	// none of the worker's task slots waiting.
	slow := s.hold > wait
	l.mu.Unlock()

	select {
	case s.ch <- struct{}{}:
	default:
		if slow || !l.wait(ctx, s, wait) {
			l.drop(k, s)
			return nil
		}
	}
	start := time.Now()
	return func() {
		held := time.Since(start)
		<-s.ch
		l.mu.Lock()
		s.hold += (held - s.hold) / 4 // the last few holds count most
		l.mu.Unlock()
		l.drop(k, s)
	}
}

func (l *localSlots) wait(ctx context.Context, s *localSem, wait time.Duration) bool {
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.ch <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *localSlots) drop(k localKey, s *localSem) {
	l.mu.Lock()
	s.refs--
	l.mu.Unlock()
}

// maxIdleTargets bounds the targets kept with no holder or waiter (for
// their hold average); past it, a new target sweeps them out.
const maxIdleTargets = 4096

// sweep forgets the targets with no holder or waiter. l.mu is held.
func (l *localSlots) sweep() {
	for k, s := range l.m {
		if s.refs == 0 {
			delete(l.m, k)
		}
	}
}

// targets is how many targets have local holders or waiters (for tests).
func (l *localSlots) targets() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.m {
		if s.refs > 0 {
			n++
		}
	}
	return n
}
