package durability_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/durability"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// logBuffer collects a logger's lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

func newLogger() (*slog.Logger, *logBuffer) {
	var b logBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

func client(t *testing.T, s *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCheck(t *testing.T) {
	t.Parallel()
	everysec := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "everysec"})
	always := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "always"})
	noAOF := redistest.Start(t, redistest.Options{})
	tests := []struct {
		name    string
		srv     *redistest.Server
		cfg     durability.Config
		method  durability.Method
		wantErr []string // substrings of the error; nil: no error
		wantLog []string
	}{
		{name: "strict on everysec refuses", srv: everysec, wantErr: []string{"--durability", "appendfsync always", "appendfsync everysec"}},
		{name: "strict without AOF refuses", srv: noAOF, wantErr: []string{"--durability", "appendfsync always", "appendonly no"}},
		{name: "strict on always", srv: always, method: durability.FsyncAlways, wantLog: []string{"durability strict"}},
		{name: "relaxed on everysec warns", srv: everysec, cfg: durability.Config{Mode: durability.Relaxed},
			method: durability.None, wantLog: []string{"level=WARN", "durability relaxed"}},
		{name: "assumed fsync always", srv: noAOF, cfg: durability.Config{AssumeFsyncAlways: true}, method: durability.FsyncAlways,
			wantLog: []string{"--redis-assume-fsync-always"}},
		{name: "min replicas without replicas warns", srv: noAOF, cfg: durability.Config{MinReplicas: 1}, method: durability.WaitReplicas,
			wantLog: []string{"fewer replicas connected", "replicas=0"}},
		{name: "bad timeout", srv: always, cfg: durability.Config{Timeout: time.Minute}, wantErr: []string{"--durability-timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := newLogger()
			tt.cfg.Logger = log
			b, err := durability.Check(context.Background(), client(t, tt.srv), tt.cfg)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Check passed (method %s), want an error", b.Method())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Method() != tt.method {
				t.Errorf("method %s, want %s", b.Method(), tt.method)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log %q lacks %q", logs.String(), w)
				}
			}
			if tt.cfg.Mode == durability.Relaxed {
				if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
					t.Errorf("relaxed logged %d warnings, want 1:\n%s", n, logs.String())
				}
			}
		})
	}
}

// A Redis whose CONFIG command is disabled (as managed Redis does): strict
// does not pass silently, and says what works instead.
func TestCheckConfigDisabled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "always"})
	rdb := client(t, srv)
	// rename-command is a start-up setting; a hook that refuses CONFIG the
	// way such a Redis does stands in for it.
	rdb.AddHook(refuseConfig{})
	log, _ := newLogger()
	_, err := durability.Check(context.Background(), rdb, durability.Config{Logger: log})
	if err == nil {
		t.Fatal("Check passed without CONFIG")
	}
	for _, w := range []string{"--durability", "CONFIG", "--redis-min-replicas", "--redis-assume-fsync-always", "--durability relaxed", "appendfsync always"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

type refuseConfig struct{}

func (refuseConfig) DialHook(next redis.DialHook) redis.DialHook { return next }
func (refuseConfig) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "config") {
			err := errors.New("ERR unknown command 'CONFIG', with args beginning with: 'GET' 'append*'")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (refuseConfig) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The machine's Redis (7.0) has no WAITAOF: the probe says so rather than
// passing. On 7.2+ with appendonly yes and everysec, Check picks WAITAOF.
func TestCheckWaitAOF(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "everysec"})
	rdb := client(t, srv)
	log, _ := newLogger()
	b, err := durability.Check(context.Background(), rdb, durability.Config{Logger: log})
	hasWaitAOF := rdb.Do(context.Background(), "command", "info", "waitaof").Val()
	if list, _ := hasWaitAOF.([]any); len(list) > 0 && list[0] != nil {
		if err != nil || b.Method() != durability.WaitAOF {
			t.Fatalf("Redis has WAITAOF: method %s, err %v", b.Method(), err)
		}
		if err := b.Sync(context.Background()); err != nil {
			t.Fatalf("WAITAOF barrier: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "WAITAOF") {
		t.Fatalf("Redis without WAITAOF: method %s, err %v; want an error naming WAITAOF", b.Method(), err)
	}
}

// replicated starts a master and a replica of it in sync.
func replicated(t *testing.T) (master, replica *redistest.Server, rdb *redis.Client) {
	t.Helper()
	master = redistest.Start(t, redistest.Options{})
	replica = redistest.StartReplica(t, master, redistest.Options{})
	return master, replica, client(t, master)
}

// With a replica, WAIT succeeds; with the replica stopped, Sync fails
// within the timeout with a NotDurableError, and again once it is back.
func TestBarrierWaitReplicas(t *testing.T) {
	t.Parallel()
	_, replica, rdb := replicated(t)
	log, _ := newLogger()
	b, err := durability.Check(context.Background(), rdb, durability.Config{MinReplicas: 1, Timeout: time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatalf("Sync with the replica up: %v", err)
	}
	replica.Pause()
	defer replica.Resume()
	rdb.Set(ctx, "k", "v2", 0)
	start := time.Now()
	err = b.Sync(ctx)
	var nd *durability.NotDurableError
	if !errors.As(err, &nd) || !errors.Is(err, durability.ErrNotDurable) || nd.Got != 0 || nd.Want != 1 {
		t.Fatalf("Sync with the replica paused: %v, want a NotDurableError 0 of 1", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("Sync failed after %s, before its timeout", d)
	}
	replica.Resume()
	deadline := time.Now().Add(20 * time.Second)
	for b.Sync(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Sync still fails 20s after the replica resumed")
		}
	}
}

// The heart of the promise: WAIT counts the calling connection's own last
// write. A bare WAIT on a connection that wrote nothing returns at once
// whatever the replicas hold; the barrier's own write makes it wait.
func TestBarrierCoversOtherConnectionsWrites(t *testing.T) {
	t.Parallel()
	_, replica, rdb := replicated(t)
	ctx := context.Background()
	writer := rdb.Conn() // the accept path's writes, on a connection of their own
	defer writer.Close()
	idle := rdb.Conn() // a connection that wrote nothing
	defer idle.Close()
	idle.Ping(ctx)
	replica.Pause()
	defer replica.Resume()
	if err := writer.Set(ctx, "order", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The trap: WAIT on the idle connection answers 1 replica at once,
	// though the replica has not got the write.
	if n, err := idle.Do(ctx, "wait", 1, 200).Int(); err != nil || n != 1 {
		t.Fatalf("bare WAIT on an idle connection: %d, %v (expected the trap: 1 at once)", n, err)
	}
	log, _ := newLogger()
	b, err := durability.Check(ctx, rdb, durability.Config{MinReplicas: 1, Timeout: 200 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); !errors.Is(err, durability.ErrNotDurable) {
		t.Fatalf("barrier with the replica paused: %v, want ErrNotDurable", err)
	}
}
