// Package redistest starts private redis-server processes for tests.
//
// Every test that needs Redis talks to a real redis-server that this package
// starts on a free port in a temporary directory. A server can be stopped,
// killed (SIGKILL) and restarted on the same port, so tests can prove what
// happens when Redis goes away. With AOF enabled a restart keeps the data.
//
// Packages share one server through [Shared] and isolate tests by logical
// database ([Server.NewClient] hands out a fresh, flushed database per test).
//
// [StartCluster] starts a Redis Cluster of such servers (one per test, as a
// cluster has no logical databases), and [CheckSlots] makes a test on one
// server fail when a script or MULTI would cross hash slots on a cluster.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// Options configure a server.
type Options struct {
	// AOF turns on the append-only file (appendfsync always), so that a
	// restart or a kill keeps every acknowledged write. Defaults to off.
	AOF bool
	// Appendfsync is the AOF's fsync policy when AOF is on: "always",
	// "everysec" or "no". Defaults to "always".
	Appendfsync string
	// ReplicaOf, host:port, makes the server a replica of that one.
	ReplicaOf string
	// TraceSyncs runs the server under strace, recording its writes and
	// fsyncs, so that [Server.Crash] can cut the AOF back to what reached
	// the disk. Needs AOF.
	TraceSyncs bool
	// Databases is the number of logical databases. Defaults to 256.
	Databases int
	// Cluster starts the server with cluster-enabled yes (its nodes.conf in
	// its directory, so a restart rejoins the cluster); [StartCluster] sets
	// it and joins the nodes.
	Cluster bool
	// ClusterNodeTimeout is cluster-node-timeout when Cluster is on.
	// Defaults to 1s, so a failover takes a few seconds.
	ClusterNodeTimeout time.Duration
}

// Server is a redis-server child process.
type Server struct {
	opts    Options
	dir     string
	port    int
	busPort int // the cluster bus port when Options.Cluster

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	nextDB int
	// aofBase is the size of each AOF increment file when the traced server
	// started: its writes append from there.
	aofBase map[string]int64
}

// ErrNoRedis is returned when redis-server is not on PATH.
var ErrNoRedis = errors.New("redis-server not found on PATH: install it (apt-get install redis-server) or run `make test`, which does")

// Start starts a redis-server for the test and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := StartServer(opts, t.TempDir())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartServer starts a redis-server with its files in dir. Close stops it.
func StartServer(opts Options, dir string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNoRedis
	}
	if opts.Databases == 0 {
		opts.Databases = 256
	}
	if opts.TraceSyncs {
		if !opts.AOF {
			return nil, errors.New("redistest: TraceSyncs needs AOF")
		}
		if _, err := exec.LookPath("strace"); err != nil {
			return nil, errors.New("redistest: strace not found on PATH: install it (apt-get install strace) or run `make deps`, which does")
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, dir: dir, port: port}
	if opts.Cluster {
		// The bus port defaults to port+10000, which may be taken or out of range.
		if s.busPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := s.Restart(); err != nil {
		return nil, err
	}
	return s, nil
}

// StartReplica starts a replica of master for the test, with opts (its
// ReplicaOf set to master), and waits until master counts it in sync.
func StartReplica(t testing.TB, master *Server, opts Options) *Server {
	t.Helper()
	opts.ReplicaOf = master.Addr()
	r := Start(t, opts)
	c := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info := c.Info(context.Background(), "replication").Val()
		if strings.Contains(info, "port="+strconv.Itoa(r.port)+",state=online") {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: replica %s not in sync after 20s:\n%s", r.Addr(), info)
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: Redis gives no event
	}
}

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Shared returns a server shared by every test of the package, started on
// first use. Call [Shutdown] from TestMain after m.Run to stop it.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = StartServer(Options{}, dir)
	})
	if sharedErr != nil {
		t.Fatalf("redistest: %v", sharedErr)
	}
	return shared
}

// Shutdown stops the shared server, if one was started.
func Shutdown() {
	if shared != nil {
		shared.Close()
		os.RemoveAll(shared.dir)
	}
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is a redis:// URL for logical database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr(), db) }

// NewDB reserves a fresh, flushed logical database for the test.
func (s *Server) NewDB(t testing.TB) int {
	t.Helper()
	s.mu.Lock()
	db := s.nextDB
	s.nextDB++
	s.mu.Unlock()
	if db >= s.opts.Databases {
		t.Fatalf("redistest: out of logical databases (%d); raise Options.Databases", s.opts.Databases)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db})
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("redistest: flush db %d: %v", db, err)
	}
	return db
}

// NewClient returns a client on a fresh logical database, closed when the test ends.
func (s *Server) NewClient(t testing.TB) *redis.Client {
	t.Helper()
	db := s.NewDB(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db})
	t.Cleanup(func() { c.Close() })
	return c
}

// Restart starts the server again on the same port after Stop or Kill.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("redistest: server is running")
	}
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--dir", s.dir, "--save", "", "--databases", strconv.Itoa(s.opts.Databases),
		"--protected-mode", "no", "--loglevel", "warning",
	}
	if s.opts.AOF {
		fsync := s.opts.Appendfsync
		if fsync == "" {
			fsync = "always"
		}
		args = append(args, "--appendonly", "yes", "--appendfsync", fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.Cluster {
		timeout := s.opts.ClusterNodeTimeout
		if timeout == 0 {
			timeout = time.Second
		}
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(s.busPort), "--cluster-node-timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	if s.opts.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(s.opts.ReplicaOf)
		if err != nil {
			return fmt.Errorf("redistest: ReplicaOf: %w", err)
		}
		args = append(args, "--replicaof", host, port)
	}
	cmd := exec.Command("redis-server", args...)
	if s.opts.TraceSyncs {
		args = append(args, "--pidfile", filepath.Join(s.dir, "redis.pid"))
		os.Remove(filepath.Join(s.dir, "redis.pid"))
		base, err := s.aofSizes()
		if err != nil {
			return err
		}
		s.aofBase = base
		cmd = exec.Command("strace", append([]string{"-f", "-y", "--seccomp-bpf",
			"-e", "trace=write,pwrite64,fsync,fdatasync", "-o", s.tracePath(), "redis-server"}, args...)...)
	}
	logf, err := os.Create(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	return s.waitReady(exited)
}

func (s *Server) waitReady(exited chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redistest: redis-server exited at start: %s", s.logTail())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line == "+PONG\r\n" {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond) // poll with a deadline: the server gives no event
	}
	return fmt.Errorf("redistest: redis-server not ready on %s after 10s: %s", s.Addr(), s.logTail())
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Dir is the server's directory: its AOF is in appendonlydir/ under it.
func (s *Server) Dir() string { return s.dir }

// Pause stops the process with SIGSTOP: it holds its connections but
// answers nothing (a replica that stops acknowledging) until Resume.
func (s *Server) Pause() { s.send(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.send(syscall.SIGCONT) }

// send signals the running process, if any, without waiting.
func (s *Server) send(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.opts.TraceSyncs {
		if pid, err := s.redisPID(); err == nil {
			syscall.Kill(pid, sig) // the child is strace; signal the redis-server it runs
			return
		}
	}
	s.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits for the process to exit.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (a clean shutdown) and waits for the process to exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.opts.TraceSyncs {
		// The child is strace: signal the redis-server it runs; strace ends with it.
		if pid, err := s.redisPID(); err == nil {
			syscall.Kill(pid, sig)
		} else {
			s.cmd.Process.Kill()
		}
	} else {
		s.cmd.Process.Signal(sig)
	}
	<-s.exited
	s.cmd = nil
}

// Close stops the server.
func (s *Server) Close() { s.Kill() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Main runs the package's tests, stops the shared server, and fails the run
// if goroutines leaked. Call it as TestMain's whole body.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
