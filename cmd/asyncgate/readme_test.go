package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBuild is the walk-through's build line. The test has built the
// binary already (TestMain); it links that one in its place.
const readmeBuild = "go build -o bin/asyncgate ./cmd/asyncgate"

// walkthrough returns the sh blocks of the README between the walk-through
// markers, in order, as one script.
func walkthrough(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- walkthrough")
	if !ok {
		t.Fatal("README.md has no <!-- walkthrough marker")
	}
	section, _, ok := strings.Cut(rest, "<!-- /walkthrough -->")
	if !ok {
		t.Fatal("README.md has no <!-- /walkthrough --> marker")
	}
	blocks := regexp.MustCompile("(?ms)^```sh\n(.*?)^```").FindAllStringSubmatch(section, -1)
	if len(blocks) < 5 {
		t.Fatalf("the walk-through has %d sh blocks", len(blocks))
	}
	var script strings.Builder
	for _, b := range blocks {
		script.WriteString(b[1])
		script.WriteString("\n")
	}
	return script.String()
}

// The README's walk-through runs as written, in order, against `asyncgate
// dev` (the built binary, on a free port), and shows what it says: an order
// placed and executed, one cancelled while it could still be, the execution
// breaker opening in an outage and the orders executing after it, and a
// refused order compensated. Before, $ID and $SIM were never set, the
// commands raced dev's build, and the cancel always answered 409 too_late.
func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	script := walkthrough(t)
	if !strings.Contains(script, readmeBuild) {
		t.Fatalf("the walk-through no longer builds with %q; update the test", readmeBuild)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	script = strings.Replace(script, readmeBuild, "ln -s "+binary+" bin/asyncgate", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	// A free port instead of 8080 (the walk-through reads the URL from dev.log).
	// The caller's ASYNCGATE_* settings (a real Redis, say) stay out: a newcomer has none.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASYNCGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ASYNCGATE_ADDR=127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // dev, if the script stopped before its kill
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
		t.Fatalf("the walk-through failed: %v\n%s\n--- dev.log (end):\n%s", err, out.String(), tail(string(log), 3000))
	}
	got := out.String()
	for _, want := range []string{
		"HTTP/1.1 202 Accepted", "Location: /v1/orders/", "Retry-After:",
		`"status":"executed"`,                // the first order, and those after the outage
		`"cancel_requested":true`, "\n202\n", // the cancel was accepted…
		`"status":"cancelled"`,                           // …and carried out
		`"execution":{"state":"open"`,                    // the breaker opened in the outage
		`"status":"failed","reason":"execution_refused"`, // the refusal…
		`"reserved":0`,                                   // …compensated
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the walk-through's output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "too_late") || strings.Contains(got, "REJECTED") {
		t.Errorf("the cancel came too late, or a webhook was rejected:\n%s", got)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
