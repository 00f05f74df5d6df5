package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a Redis Sentinel (redis-server --sentinel) child process
// watching one master.
type Sentinel struct {
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr is host:port of the sentinel.
func (s *Sentinel) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// StartSentinel starts a sentinel for the test that monitors master under
// masterName (down after 1s, quorum quorum), stops it when the test ends,
// and waits until it names the master.
func StartSentinel(t testing.TB, master *Server, masterName string, quorum int) *Sentinel {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal(ErrNoRedis)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A sentinel rewrites its configuration file: it must be its own, writable.
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nloglevel warning\n"+
		"sentinel monitor %[3]s 127.0.0.1 %[4]d %[5]d\n"+
		"sentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 10000\n",
		port, dir, masterName, master.port, quorum)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sentinel.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("redistest: start sentinel: %v", err)
	}
	s := &Sentinel{port: port, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(s.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
	})
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		addr, err := c.GetMasterAddrByName(context.Background(), masterName).Result()
		if err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(master.port) {
			return s
		}
		select {
		case <-s.exited:
			b, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("redistest: sentinel exited at start: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinel on %s does not name master %s after 10s (%v %v)", s.Addr(), master.Addr(), addr, err)
		}
		time.Sleep(20 * time.Millisecond) // poll with a deadline: Sentinel gives no event
	}
}
