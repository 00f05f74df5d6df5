package downstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedConfig configures a [Shared].
type SharedConfig struct {
	// Prefix starts every key and the channel. Defaults to "ag:".
	Prefix string

	// Instance names this process in notices and in the probe lock. Defaults to
	// "host-pid-random".
	Instance string

	// ResyncInterval is how often the trips recorded in Redis are read again, in case a
	// notice was missed; they are also read whenever the subscription is (re)established.
	// Defaults to 5s.
	ResyncInterval time.Duration

	// Timeout bounds each Redis command. Defaults to 1s.
	Timeout time.Duration

	// Logger receives trips and closes learnt from other processes, and Redis errors.
	// Defaults to discarding everything.
	Logger *slog.Logger
}

func (c SharedConfig) withDefaults() SharedConfig {
	if c.Prefix == "" {
		c.Prefix = "ag:"
	}
	if c.Instance == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Instance = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Shared lets the breakers of several processes act as one, through Redis, without a lock
// on the call path:
//
//   - when a breaker trips, its process records the open-until time in Redis and publishes
//     a notice; every other process's breaker of that downstream rejects calls until then;
//   - once that time has passed, the downstream is half-open for the whole cluster until a
//     probe succeeds: a process sends a probe only while it holds the downstream's probe
//     lock (SET NX PX), so one process probes at a time; a good probe closes the breaker
//     everywhere, a failed one opens it again everywhere.
//
// Calls while the breaker is closed never touch Redis. Should Redis be unreachable, each
// breaker decides alone, as without Shared. Trips are compared by wall-clock time, so the
// clocks of the processes should agree within a fraction of the open timeout.
//
// A Shared is given to clients in [Config].Shared. Start it to hear other processes; Close
// it when done. It is safe for concurrent use.
type Shared struct {
	rdb     redis.UniversalClient
	cfg     SharedConfig
	keys    keys
	channel string

	mu       sync.Mutex
	breakers map[string][]*breaker
	started  bool
	closed   bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewShared returns a Shared on rdb. Nothing runs until Start.
func NewShared(rdb redis.UniversalClient, cfg SharedConfig) *Shared {
	cfg = cfg.withDefaults()
	k := keys{cfg.Prefix}
	return &Shared{rdb: rdb, cfg: cfg, keys: k, channel: k.events(dbOf(rdb)), breakers: make(map[string][]*breaker)}
}

// dbOf returns the logical database of rdb: 0 for a cluster or an unknown client.
func dbOf(rdb redis.UniversalClient) int {
	if c, ok := rdb.(*redis.Client); ok {
		return c.Options().DB
	}
	return 0
}

// Instance returns the name of this process in notices and locks.
func (s *Shared) Instance() string { return s.cfg.Instance }

// Start subscribes to the notices of other processes in the background, until Close. It
// reads the recorded trips at once and whenever the subscription is re-established.
func (s *Shared) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.listen(ctx)
	}()
}

// Close stops listening and waits for the notices being published.
func (s *Shared) Close() {
	s.mu.Lock()
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

func (s *Shared) register(b *breaker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakers[b.name] = append(s.breakers[b.name], b)
}

func (s *Shared) breakersOf(name string) []*breaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.breakers[name]
}

func (s *Shared) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.breakers))
	for n := range s.breakers {
		out = append(out, n)
	}
	return out
}

// notice is a message on the events channel.
type notice struct {
	Downstream string `json:"downstream"`
	State      string `json:"state"` // "open" or "closed"
	UntilMS    int64  `json:"until_ms,omitempty"`
	Instance   string `json:"instance"`
}

const (
	stateOpen   = "open"
	stateClosed = "closed"
)

// listen applies the notices of the events channel until ctx ends.
func (s *Shared) listen(ctx context.Context) {
	ps := s.rdb.Subscribe(ctx, s.channel)
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions()
	tick := time.NewTicker(s.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				// Subscribed, at start or after a reconnect: notices may have been missed.
				if m.Kind == "subscribe" {
					s.resync(ctx)
				}
			case *redis.Message:
				var n notice
				if err := json.Unmarshal([]byte(m.Payload), &n); err != nil || n.Downstream == "" {
					s.cfg.Logger.WarnContext(ctx, "shared breaker: bad notice ignored", "payload", m.Payload)
					continue
				}
				s.apply(ctx, n)
			}
		case <-tick.C:
			s.resync(ctx)
		}
	}
}

func (s *Shared) apply(ctx context.Context, n notice) {
	own := n.Instance == s.cfg.Instance
	for _, b := range s.breakersOf(n.Downstream) {
		switch n.State {
		case stateOpen:
			b.remoteOpen(time.UnixMilli(n.UntilMS))
		case stateClosed:
			b.remoteClosed()
		}
	}
	if own {
		return
	}
	switch n.State {
	case stateOpen:
		s.cfg.Logger.WarnContext(ctx, "downstream breaker opened by another process",
			"downstream", n.Downstream, "instance", n.Instance, "open_until", time.UnixMilli(n.UntilMS).UTC())
	case stateClosed:
		s.cfg.Logger.InfoContext(ctx, "downstream breaker closed by another process",
			"downstream", n.Downstream, "instance", n.Instance)
	}
}

// resync reads the recorded trip of every downstream with a breaker here.
func (s *Shared) resync(ctx context.Context) {
	for _, name := range s.names() {
		st, err := s.Status(ctx, name)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.DebugContext(ctx, "shared breaker: resync failed", "downstream", name, "err", err)
			}
			continue
		}
		for _, b := range s.breakersOf(name) {
			if st.Tripped {
				b.remoteOpen(st.OpenUntil)
			} else {
				b.remoteAbsent()
			}
		}
	}
}

// SharedStatus is the cluster's view of one downstream's breaker, as recorded in Redis.
type SharedStatus struct {
	// Tripped is true from a trip until a good probe: the breaker is open until OpenUntil,
	// then half-open.
	Tripped bool
	// OpenUntil is the end of the last trip's open time; zero when not Tripped.
	OpenUntil time.Time
}

// Status reads the recorded trip of the downstream called name.
func (s *Shared) Status(ctx context.Context, name string) (SharedStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ms, err := s.rdb.Get(ctx, s.keys.breaker(name)).Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return SharedStatus{}, nil
	case err != nil:
		return SharedStatus{}, fmt.Errorf("read breaker %s: %w", name, err)
	}
	return SharedStatus{Tripped: true, OpenUntil: time.UnixMilli(ms)}, nil
}

// openScript records a trip unless a later one is recorded, publishes it, and drops the
// caller's probe lock. KEYS: breaker, probe. ARGV: until ms, key TTL ms, channel, notice,
// instance.
var openScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local untilms = tonumber(ARGV[1])
local later = untilms > cur
if later then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
if redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
if later then return 1 end
return 0
`)

// closeScript ends a trip whose open time has passed, and publishes the close; a trip
// still open (recorded after the probe began) stands. KEYS: breaker, probe. ARGV: now ms,
// channel, notice.
var closeScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`)

// probeScript takes (or renews) the probe lock for the caller; when another instance holds
// it, it returns the lock's remaining TTL in ms. KEYS: probe. ARGV: instance, TTL ms.
var probeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return -1
end
return redis.call('PTTL', KEYS[1])
`)

// releaseScript drops the probe lock if the caller holds it. KEYS: probe. ARGV: instance.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// tripKeyTTL is how long a trip stays recorded past its open time when no probe closes
// it (every process gone, say); afterwards the breakers close and decide anew.
const tripKeyTTL = 10 * time.Minute

// async runs fn in the background with a timeout, unless s is closed.
func (s *Shared) async(what string, fn func(ctx context.Context) error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		defer cancel()
		if err := fn(ctx); err != nil {
			s.cfg.Logger.Warn("shared breaker: "+what+" failed; breakers decide alone meanwhile", "err", err)
		}
	}()
}

// publishOpen records a trip of name until then, and tells the other processes.
func (s *Shared) publishOpen(name string, until time.Time) {
	s.async("record trip", func(ctx context.Context) error {
		msg, _ := json.Marshal(notice{Downstream: name, State: stateOpen, UntilMS: until.UnixMilli(), Instance: s.cfg.Instance})
		ttl := time.Until(until) + tripKeyTTL
		return openScript.Run(ctx, s.rdb, []string{s.keys.breaker(name), s.keys.probe(name)},
			until.UnixMilli(), ttl.Milliseconds(), s.channel, string(msg), s.cfg.Instance).Err()
	})
}

// publishClosed ends the trip of name after a good probe, and tells the other processes.
func (s *Shared) publishClosed(name string) {
	s.async("record close", func(ctx context.Context) error {
		msg, _ := json.Marshal(notice{Downstream: name, State: stateClosed, Instance: s.cfg.Instance})
		return closeScript.Run(ctx, s.rdb, []string{s.keys.breaker(name), s.keys.probe(name)},
			time.Now().UnixMilli(), s.channel, string(msg)).Err()
	})
}

// releaseProbe drops this process's probe lock of name.
func (s *Shared) releaseProbe(name string) {
	s.async("release probe lock", func(ctx context.Context) error {
		return releaseScript.Run(ctx, s.rdb, []string{s.keys.probe(name)}, s.cfg.Instance).Err()
	})
}

// takeProbe takes the probe lock of name for ttl. When another process holds it, it
// reports false and the lock's remaining time.
func (s *Shared) takeProbe(ctx context.Context, name string, ttl time.Duration) (bool, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ms, err := probeScript.Run(ctx, s.rdb, []string{s.keys.probe(name)}, s.cfg.Instance, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, 0, fmt.Errorf("take probe lock of %s: %w", name, err)
	}
	if ms < 0 {
		return true, 0, nil
	}
	return false, time.Duration(ms) * time.Millisecond, nil
}
