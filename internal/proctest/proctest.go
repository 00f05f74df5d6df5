// Package proctest builds the asyncgate binary for tests that run it as a
// child process (to kill it with SIGKILL, or to run several workers).
package proctest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles cmd/asyncgate into a temporary directory. It returns the
// binary's path and a func that removes it. Call it from TestMain.
func Build() (string, func(), error) {
	dir, err := os.MkdirTemp("", "asyncgate-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "asyncgate")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/asyncgate/asyncgate/cmd/asyncgate").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build asyncgate: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Proc is a child process whose output is kept for the test.
type Proc struct {
	cmd  *exec.Cmd
	out  Buffer
	once sync.Once
	done chan struct{} // closed when the process has ended and its output is read
}

// Start runs bin with args until the test ends (or Kill). The child dies
// with the test process, and its output is logged when the test failed.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			out := p.Output()
			if len(out) > 4000 {
				out = "…" + out[len(out)-4000:]
			}
			t.Logf("%s %v (pid %d) output:\n%s", filepath.Base(bin), args[:min(1, len(args))], p.cmd.Process.Pid, out)
		}
	})
	return p
}

// WorkerArgs are the arguments of `asyncgate worker` on redisURL with both
// downstreams at simURL, quiet logs, a fast reconciler and --durability
// relaxed (the test servers run without appendfsync always; extra may say
// --durability strict, the last flag wins), then extra.
func WorkerArgs(redisURL, simURL string, extra ...string) []string {
	return append([]string{"worker", "--redis", redisURL, "--portfolio-url", simURL, "--execution-url", simURL,
		"--log-level", "warn", "--reconcile-interval", "1s", "--durability", "relaxed"}, extra...)
}

// Kill sends SIGKILL and waits for the process to end. Calling it again does nothing.
func (p *Proc) Kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
}

// Stop sends sig (SIGTERM, as an orchestrator does) and waits up to within for the
// process to end. It returns the exit code (-1 when a signal ended it, or when it
// had not ended within: then it is killed) and how long it took.
func (p *Proc) Stop(sig syscall.Signal, within time.Duration) (code int, took time.Duration) {
	start := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		p.Kill()
		return -1, time.Since(start)
	}
	took = time.Since(start)
	p.once.Do(func() {}) // ended: Kill has nothing to do
	return p.cmd.ProcessState.ExitCode(), took
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is what the process wrote so far, stdout and stderr together.
func (p *Proc) Output() string { return p.out.String() }

// Buffer is a bytes.Buffer safe for one writer and concurrent readers: a
// child's output, or a log handler's, read while it is being written.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
