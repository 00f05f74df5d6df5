package webhooks

import (
	"context"
	"sync"
	"time"
)

// connMutex guards a pooled connection's state (dialling, opening
// channels). It is a channel so that an attempt waiting behind a slow dial
// gives up when its own time is out: attempts to a dead broker hold their
// delivery slots no longer than attempts to a dead HTTP receiver.
type connMutex chan struct{}

func newConnMutex() connMutex { return make(connMutex, 1) }

// LockContext locks m, or returns ctx's error if ctx ends first.
func (m connMutex) LockContext(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m connMutex) Lock()   { m <- struct{}{} }
func (m connMutex) Unlock() { <-m }

// connPool keeps a broker sender's connections, one per connection URL,
// shared by the deliveries in flight. An entry unused for idle is closed;
// the next attempt to its URL makes a new one.
type connPool[E interface{ close() }] struct {
	idle     time.Duration
	newEntry func(url string) E

	mu      sync.Mutex
	entries map[string]*poolSlot[E]
	closed  bool
	stop    chan struct{}
	reaper  sync.Once
}

type poolSlot[E any] struct {
	e        E
	url      string
	lastUsed time.Time // under connPool.mu
	inFlight int       // under connPool.mu
}

func newConnPool[E interface{ close() }](idle time.Duration, newEntry func(url string) E) *connPool[E] {
	return &connPool[E]{idle: idle, newEntry: newEntry, entries: map[string]*poolSlot[E]{}, stop: make(chan struct{})}
}

// acquire returns the entry of url, counted in use until release.
func (p *connPool[E]) acquire(url string) *poolSlot[E] {
	p.reaper.Do(func() { go p.reap() })
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.entries[url]
	if s == nil {
		s = &poolSlot[E]{e: p.newEntry(url), url: url}
		if !p.closed {
			p.entries[url] = s
		}
	}
	s.inFlight++
	s.lastUsed = time.Now()
	return s
}

func (p *connPool[E]) release(s *poolSlot[E]) {
	p.mu.Lock()
	s.inFlight--
	s.lastUsed = time.Now()
	orphan := p.entries[s.url] != s && s.inFlight == 0
	p.mu.Unlock()
	if orphan { // closed by Close or the reaper while in use
		s.e.close()
	}
}

// size is how many entries the pool holds.
func (p *connPool[E]) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// Close closes every entry not in use now, and the others when released.
func (p *connPool[E]) Close() {
	p.mu.Lock()
	var idle []*poolSlot[E]
	for url, s := range p.entries {
		delete(p.entries, url)
		if s.inFlight == 0 {
			idle = append(idle, s)
		}
	}
	if !p.closed {
		p.closed = true
		close(p.stop)
	}
	p.mu.Unlock()
	for _, s := range idle {
		s.e.close()
	}
}

// reap closes the entries unused for p.idle.
func (p *connPool[E]) reap() {
	tick := time.NewTicker(max(p.idle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		var idle []*poolSlot[E]
		p.mu.Lock()
		for url, s := range p.entries {
			if s.inFlight == 0 && time.Since(s.lastUsed) >= p.idle {
				delete(p.entries, url)
				idle = append(idle, s)
			}
		}
		p.mu.Unlock()
		for _, s := range idle {
			s.e.close()
		}
	}
}
