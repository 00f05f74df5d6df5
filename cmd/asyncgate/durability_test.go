package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// The built binary refuses to start under --durability strict (the
// default) on a Redis that fsyncs every second, and says what to do.
func TestStrictRefusesEverysec(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "everysec"})
	for _, role := range []string{"api", "serve", "worker"} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := []string{role, "--redis", rs.URL(0)}
			if role != "worker" {
				args = append(args, "--api-keys", key+"=acme", "--addr", "127.0.0.1:0")
			}
			if role != "api" {
				args = append(args, "--portfolio-url", "http://127.0.0.1:1", "--execution-url", "http://127.0.0.1:1")
			}
			out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("asyncgate %s on everysec: err %v, want a non-zero exit\n%s", role, err, out)
			}
			for _, w := range []string{"--durability", "appendfsync always"} {
				if !strings.Contains(string(out), w) {
					t.Errorf("exit message does not name %q:\n%s", w, out)
				}
			}
		})
	}
}

// startedLine polls p's output for its start line, until a deadline.
func startedLine(t *testing.T, out func() string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, line := range strings.Split(out(), "\n") {
			if strings.Contains(line, `"asyncgate started"`) {
				return out()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start line after 30s:\n%s", out())
		}
		time.Sleep(50 * time.Millisecond) // poll with a deadline: the child gives no event
	}
}

// Strict starts on appendfsync always; relaxed (flag or environment)
// starts on everysec and logs its warning once.
func TestDurabilityStarts(t *testing.T) {
	t.Parallel()
	always := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "always"})
	everysec := redistest.Start(t, redistest.Options{AOF: true, Appendfsync: "everysec"})
	t.Run("strict on always", func(t *testing.T) {
		p := proctest.Start(t, binary, "api", "--redis", always.URL(0), "--api-keys", key+"=acme", "--addr", "127.0.0.1:0")
		out := startedLine(t, p.Output)
		if !strings.Contains(out, `"durability_method":"appendfsync always"`) {
			t.Errorf("start line lacks the durability method:\n%s", out)
		}
		if strings.Contains(out, "durability relaxed") {
			t.Errorf("strict warned as relaxed:\n%s", out)
		}
	})
	t.Run("relaxed flag on everysec", func(t *testing.T) {
		p := proctest.Start(t, binary, "api", "--redis", everysec.URL(0), "--api-keys", key+"=acme", "--addr", "127.0.0.1:0",
			"--durability", "relaxed")
		out := startedLine(t, p.Output)
		if n := strings.Count(out, "durability relaxed"); n != 1 {
			t.Errorf("relaxed warning logged %d times, want once:\n%s", n, out)
		}
		if !strings.Contains(out, `"level":"WARN"`) {
			t.Errorf("relaxed warning is not a warning:\n%s", out)
		}
	})
	t.Run("relaxed env on everysec", func(t *testing.T) {
		var out proctest.Buffer
		cmd := exec.Command(binary, "serve", "--redis", everysec.URL(0), "--api-keys", key+"=acme", "--addr", "127.0.0.1:0",
			"--portfolio-url", "http://127.0.0.1:1", "--execution-url", "http://127.0.0.1:1")
		cmd.Env = append(os.Environ(), "ASYNCGATE_DURABILITY=relaxed")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		got := startedLine(t, out.String)
		if n := strings.Count(got, "durability relaxed"); n != 1 {
			t.Errorf("relaxed warning logged %d times, want once:\n%s", n, got)
		}
	})
}
