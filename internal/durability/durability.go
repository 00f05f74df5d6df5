// Package durability decides, at start, how the API makes the writes it
// acknowledges durable, and provides the barrier its handlers pass before
// they answer.
//
// # Modes
//
// Under [Strict] (the default) a write the API acknowledges is on disk or
// on replicas before the answer. [Check] asks Redis which of these holds,
// in this order:
//
//   - Config.MinReplicas N ≥ 1: the barrier runs WAIT N on every
//     acknowledged write ([WaitReplicas]).
//   - appendonly yes and appendfsync always (read with CONFIG GET), or
//     Config.AssumeFsyncAlways where CONFIG is disabled: Redis fsyncs the
//     AOF before it replies to a write, so every reply the API waited for
//     is already on disk and the barrier does nothing ([FsyncAlways]).
//   - WAITAOF (Redis 7.2+) with appendonly yes: the barrier runs WAITAOF 1 0
//     ([WaitAOF]), a group commit on the next fsync.
//
// When none holds, Check fails with an error that names --durability and
// appendfsync always (or, when CONFIG is disabled, the flags that work
// without it). Under [Relaxed] Check logs one warning and the barrier does
// nothing. The check runs once, at start: a CONFIG SET on a running Redis,
// or a restart with another configuration, is not noticed until the
// process restarts.
//
// # The barrier and the connection it runs on
//
// Redis's WAIT and WAITAOF wait for the replication offset of the calling
// connection's own last write (the client's woff), not for the server's.
// A go-redis client spreads commands over a pool, and the accept path's
// writes (the order script, the Asynq enqueue) run on whichever connections
// the pool hands out, so a bare WAIT could run on a connection that wrote
// nothing and return at once. [Barrier.Sync] therefore sends one pipeline,
// on one connection: a write of its own (SET ag:durability:barrier) and
// then WAIT or WAITAOF. The replication stream is one ordered log: every
// write whose reply the caller already holds has a smaller offset than the
// barrier's SET, so a replica (or the AOF) that has the SET has them all.
//
// Keys (documented once, here):
//
//	ag:durability:barrier      string  the barrier's own write; its value means nothing
//	ag:durability:barrier:{N}  string  the same on a Redis Cluster, one per master (see cluster.go)
package durability

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Mode is the durability a process promises for the writes it acknowledges.
type Mode string

const (
	// Strict acknowledges a write only once it is on disk or on replicas.
	Strict Mode = "strict"
	// Relaxed acknowledges a write once Redis has it in memory.
	Relaxed Mode = "relaxed"
)

// ParseMode parses "strict" or "relaxed".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case Strict, Relaxed:
		return m, nil
	}
	return "", fmt.Errorf("--durability must be strict or relaxed, not %q", s)
}

// Method is how a Barrier makes writes durable.
type Method int

const (
	// None: relaxed, nothing is waited for.
	None Method = iota
	// FsyncAlways: Redis fsyncs before replying; nothing more to wait for.
	FsyncAlways
	// WaitAOF: WAITAOF 1 0 after the request's writes.
	WaitAOF
	// WaitReplicas: WAIT N after the request's writes.
	WaitReplicas
)

func (m Method) String() string {
	switch m {
	case FsyncAlways:
		return "appendfsync always"
	case WaitAOF:
		return "WAITAOF"
	case WaitReplicas:
		return "WAIT replicas"
	}
	return "none"
}

// Key is the barrier's own write.
const Key = "ag:durability:barrier"

// MaxTimeout bounds Config.Timeout: a WAIT must end before the Redis
// client's read timeout (3s by default) cuts the connection.
const MaxTimeout = 2 * time.Second

// Config configures Check.
type Config struct {
	// Mode defaults to Strict.
	Mode Mode
	// MinReplicas, when 1 or more, makes every acknowledged write wait
	// for that many replicas (WAIT). Defaults to 0: none.
	MinReplicas int
	// Timeout bounds one WAIT or WAITAOF; when it passes, the write is not
	// acknowledged (ErrNotDurable). At most MaxTimeout. Defaults to 1s.
	Timeout time.Duration
	// AssumeFsyncAlways trusts the operator that Redis runs appendonly yes
	// and appendfsync always, for managed Redis where CONFIG is disabled.
	AssumeFsyncAlways bool
	// Logger receives the start-up line (and relaxed's warning). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = Strict
	}
	if c.Timeout == 0 {
		c.Timeout = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Mode != Strict && c.Mode != Relaxed {
		return fmt.Errorf("--durability must be strict or relaxed, not %q", c.Mode)
	}
	if c.MinReplicas < 0 {
		return errors.New("--redis-min-replicas must be 0 or more")
	}
	if c.Timeout <= 0 || c.Timeout > MaxTimeout {
		return fmt.Errorf("--durability-timeout must be more than 0 and at most %s, not %s", MaxTimeout, c.Timeout)
	}
	return nil
}

// Barrier makes the writes made before Sync durable. The zero Barrier and
// a nil *Barrier do nothing.
type Barrier struct {
	method  Method
	rdb     redis.UniversalClient
	n       int
	timeout time.Duration
	keys    *clusterKeys // on a Redis Cluster: the barrier runs on every master (cluster.go)
}

// Method is how the barrier makes writes durable.
func (b *Barrier) Method() Method {
	if b == nil {
		return None
	}
	return b.method
}

// NotDurableError is Sync's error when the wait timed out: the writes
// are in Redis's memory but not (yet) on as many disks or replicas as
// promised.
type NotDurableError struct {
	Method  Method
	Want    int // replicas (WAIT) or local fsyncs (WAITAOF) asked for
	Got     int // how many acknowledged within Timeout
	Timeout time.Duration
	Node    string // on a Redis Cluster, the master that did not confirm
}

func (e *NotDurableError) Error() string {
	on := ""
	if e.Node != "" {
		on = " of the cluster master " + e.Node
	}
	if e.Method == WaitAOF {
		return fmt.Sprintf("durability: the AOF%s was not fsynced within %s", on, e.Timeout)
	}
	return fmt.Sprintf("durability: %d of %d replicas%s acknowledged within %s", e.Got, e.Want, on, e.Timeout)
}

// ErrNotDurable matches every error of Sync: the writes were made but are
// not known to be durable.
var ErrNotDurable = errors.New("durability: writes not confirmed durable")

func (e *NotDurableError) Is(target error) bool { return target == ErrNotDurable }

type syncError struct{ err error }

func (e syncError) Error() string        { return "durability barrier: " + e.err.Error() }
func (e syncError) Unwrap() error        { return e.err }
func (e syncError) Is(target error) bool { return target == ErrNotDurable }

// Sync returns once every write whose reply the caller holds is durable as
// promised. It costs one round trip with WAIT or WAITAOF (plus the wait)
// and nothing otherwise. Its errors match ErrNotDurable: a
// *NotDurableError when the wait timed out, or the Redis error.
func (b *Barrier) Sync(ctx context.Context) error {
	if b == nil || (b.method != WaitAOF && b.method != WaitReplicas) {
		return nil
	}
	if b.keys != nil {
		return b.syncCluster(ctx)
	}
	// One pipeline, one connection: the SET gives this connection an
	// offset at least that of every write before it (see the package doc).
	if err := b.syncOn(ctx, b.rdb, Key, ""); err != nil {
		var nd *NotDurableError
		if errors.As(err, &nd) {
			return nd
		}
		return syncError{err}
	}
	return nil
}

// syncOn runs the barrier's pipeline (SET key, then WAIT or WAITAOF) on c,
// one connection. node names the Redis in a NotDurableError ("" for the
// only one).
func (b *Barrier) syncOn(ctx context.Context, c redis.Cmdable, key, node string) error {
	ms := b.timeout.Milliseconds()
	pipe := c.Pipeline()
	pipe.Set(ctx, key, "1", 0)
	var wait *redis.Cmd
	if b.method == WaitAOF {
		wait = pipe.Do(ctx, "waitaof", 1, 0, ms)
	} else {
		wait = pipe.Do(ctx, "wait", b.n, ms)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	if b.method == WaitAOF {
		acks, err := wait.Int64Slice()
		if err != nil || len(acks) != 2 {
			return fmt.Errorf("WAITAOF answered %v: %v", wait.Val(), err)
		}
		if acks[0] < 1 {
			return &NotDurableError{Method: WaitAOF, Want: 1, Got: int(acks[0]), Timeout: b.timeout, Node: node}
		}
		return nil
	}
	n, err := wait.Int()
	if err != nil {
		return err
	}
	if n < b.n {
		return &NotDurableError{Method: WaitReplicas, Want: b.n, Got: n, Timeout: b.timeout, Node: node}
	}
	return nil
}

// Check reads how Redis persists writes and returns the barrier that keeps
// cfg's promise, or an error saying why it cannot be kept (the process
// should then refuse to start).
func Check(ctx context.Context, rdb redis.UniversalClient, cfg Config) (*Barrier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	b := &Barrier{rdb: rdb, n: cfg.MinReplicas, timeout: cfg.Timeout}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		b.keys = &clusterKeys{cc: cc}
	}
	if cfg.Mode == Relaxed {
		log.Warn("durability relaxed: a 202 does not wait for disk or replicas; a Redis crash can lose writes that were acknowledged in the last second or more (see README, Durability)",
			"durability", string(Relaxed))
		return b, nil
	}
	if err := ping(ctx, rdb); err != nil {
		return nil, fmt.Errorf("--durability strict: cannot reach Redis to check how it keeps writes: %w", err)
	}
	nodes, err := nodesOf(ctx, rdb)
	if err != nil {
		return nil, fmt.Errorf("--durability strict: cannot list the cluster's masters to check how they keep writes: %w", err)
	}
	if cfg.MinReplicas > 0 {
		b.method = WaitReplicas
		for _, n := range nodes {
			replicas, err := connectedReplicas(ctx, n.c)
			switch {
			case err != nil:
				return nil, fmt.Errorf("--durability strict with --redis-min-replicas %d: read INFO replication%s: %w", cfg.MinReplicas, n.on(), err)
			case replicas < cfg.MinReplicas && n.name != "":
				log.Warn("fewer replicas connected to a cluster master than --redis-min-replicas: writes answer 503 until enough are",
					"master", n.name, "replicas", replicas, "min_replicas", cfg.MinReplicas)
			case replicas < cfg.MinReplicas:
				log.Warn("fewer replicas connected than --redis-min-replicas: writes answer 503 until enough are",
					"replicas", replicas, "min_replicas", cfg.MinReplicas)
			}
		}
		log.Info("durability strict: every acknowledged write waits for replicas (WAIT)",
			"durability", string(Strict), "method", b.method.String(), "min_replicas", cfg.MinReplicas, "timeout", cfg.Timeout.String())
		return b, nil
	}
	if cfg.AssumeFsyncAlways {
		b.method = FsyncAlways
		log.Info("durability strict: trusting --redis-assume-fsync-always (Redis runs appendonly yes, appendfsync always)",
			"durability", string(Strict), "method", b.method.String())
		return b, nil
	}
	// Every master must fsync always (or, next, have WAITAOF); the first
	// that does not is the one the error names.
	var (
		aof, fsync string
		cfgErr     error
		at         node
	)
	for _, n := range nodes {
		at = n
		aof, fsync, cfgErr = persistence(ctx, n.c)
		if cfgErr != nil || aof != "yes" || fsync != "always" {
			break
		}
	}
	if cfgErr == nil && aof == "yes" && fsync == "always" {
		b.method = FsyncAlways
		log.Info("durability strict: Redis fsyncs every write before replying (appendonly yes, appendfsync always)",
			"durability", string(Strict), "method", b.method.String())
		return b, nil
	}
	// The master that does not fsync always first: the error names it.
	waitaofErr := probeWaitAOF(ctx, at.c)
	for _, n := range nodes {
		if waitaofErr != nil {
			break
		}
		waitaofErr = probeWaitAOF(ctx, n.c)
	}
	if waitaofErr == nil {
		b.method = WaitAOF
		log.Info("durability strict: every acknowledged write waits for the AOF fsync (WAITAOF)",
			"durability", string(Strict), "method", b.method.String(), "appendfsync", fsync, "timeout", cfg.Timeout.String())
		return b, nil
	}
	if cfgErr != nil {
		return nil, fmt.Errorf("--durability strict: cannot read Redis's persistence settings%s (CONFIG GET: %v; WAITAOF: %v), as on managed Redis where CONFIG is disabled. "+
			"Either make Redis run appendonly yes with appendfsync always and pass --redis-assume-fsync-always, "+
			"or pass --redis-min-replicas N to wait for N replicas on every accepted write, "+
			"or pass --durability relaxed to accept that a Redis crash can lose accepted orders",
			at.on(), cfgErr, waitaofErr)
	}
	return nil, fmt.Errorf("--durability strict: Redis%s runs appendonly %s, appendfsync %s, and WAITAOF is not available (%v): "+
		"a Redis crash could lose orders already answered 202. "+
		"Run Redis with appendonly yes and appendfsync always (CONFIG SET appendonly yes; CONFIG SET appendfsync always; and in redis.conf), "+
		"or use Redis 7.2+ with appendonly yes (WAITAOF), or pass --redis-min-replicas N, "+
		"or pass --durability relaxed to accept the loss",
		at.on(), aof, fsync, waitaofErr)
}

// ping waits until Redis answers PING, or ctx ends.
func ping(ctx context.Context, rdb redis.UniversalClient) error {
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond): // Redis may be starting beside us
		}
	}
}

// persistence reads appendonly and appendfsync.
func persistence(ctx context.Context, rdb nodeClient) (aof, fsync string, err error) {
	vals, err := rdb.ConfigGet(ctx, "append*").Result()
	if err != nil {
		return "", "", err
	}
	aof, ok1 := vals["appendonly"]
	fsync, ok2 := vals["appendfsync"]
	if !ok1 || !ok2 {
		return "", "", fmt.Errorf("CONFIG GET append* did not answer appendonly and appendfsync (got %d settings)", len(vals))
	}
	return strings.ToLower(aof), strings.ToLower(fsync), nil
}

// probeWaitAOF reports whether WAITAOF 1 0 works: Redis 7.2+ with
// appendonly yes. On a fresh connection it returns at once.
func probeWaitAOF(ctx context.Context, rdb nodeClient) error {
	err := rdb.Do(ctx, "waitaof", 1, 0, 1).Err()
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown command") {
		return errors.New("Redis before 7.2 has no WAITAOF")
	}
	return err
}

// connectedReplicas reads connected_slaves from INFO replication.
func connectedReplicas(ctx context.Context, rdb nodeClient) (int, error) {
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO replication has no connected_slaves")
}
