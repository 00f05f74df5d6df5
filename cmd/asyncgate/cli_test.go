package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// runBinary runs the built asyncgate with args and waits for it to end
// (within limit, else the test fails: a help that starts servers never ends).
func runBinary(t *testing.T, limit time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("asyncgate %v still ran after %s; output:\n%s", args, limit, out)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("asyncgate %v: %v", args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// Help, in each of its forms, prints usage, exits 0 and starts nothing
// (before, `CMD -h` printed the flags and then ran the command).
func TestCLIHelpExitsWithoutStarting(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"help", "api"}, {"help", "worker"}, {"help", "keys"},
		{"dev", "-h"}, {"serve", "-h"}, {"api", "--help"}, {"worker", "-h"}, {"sim", "-h"}, {"keys", "-h"}, {"receive", "-h"}, {"listen", "-h"},
		{"dev", "--addr", "127.0.0.1:0", "-h"},
	} {
		out, code := runBinary(t, 30*time.Second, args...)
		if code != 0 {
			t.Errorf("asyncgate %v exited %d; output:\n%s", args, code, out)
		}
		if !strings.Contains(out, "usage: asyncgate") {
			t.Errorf("asyncgate %v printed no usage:\n%s", args, out)
		}
		for _, started := range []string{"is running", "asyncgate started", "listening"} {
			if strings.Contains(out, started) {
				t.Errorf("asyncgate %v started something (%q):\n%s", args, started, out)
			}
		}
	}
}

// Each command's help lists its own flags only, under headings, each with
// its variable and a default people read.
func TestCLIHelpListsOwnFlags(t *testing.T) {
	t.Parallel()
	flags := regexp.MustCompile(`(?m)^  --([a-z-]+)`)
	help := func(cmd string) (string, map[string]bool) {
		out, code := runBinary(t, 30*time.Second, "help", cmd)
		if code != 0 {
			t.Fatalf("help %s exited %d", cmd, code)
		}
		set := make(map[string]bool)
		for _, m := range flags.FindAllStringSubmatch(out, -1) {
			set[m[1]] = true
		}
		return out, set
	}
	apiOut, api := help("api")
	workerOut, worker := help("worker")
	_, dev := help("dev")
	for _, f := range []string{"concurrency", "reconcile-interval", "execution-max-concurrent", "portfolio-max-concurrent", "execution-url", "downstream-timeout"} {
		if api[f] {
			t.Errorf("api -h lists the worker flag --%s", f)
		}
		if !worker[f] || !dev[f] {
			t.Errorf("worker or dev -h lacks --%s", f)
		}
	}
	for _, f := range []string{"addr", "admin-session-secret", "admin-session-ttl", "admin-queues-readonly", "rate-limit", "api-keys", "order-deadline"} {
		if worker[f] {
			t.Errorf("worker -h lists the API flag --%s", f)
		}
		if !api[f] || !dev[f] {
			t.Errorf("api or dev -h lacks --%s", f)
		}
	}
	for _, f := range []string{"redis", "webhook-allow-private", "webhook-allow-http", "log-level"} {
		if !api[f] || !worker[f] {
			t.Errorf("api or worker -h lacks --%s", f)
		}
	}
	for _, want := range []string{"\nRedis:\n", "\nHTTP API:\n", "\nDashboard:\n", "(default 15m; env ASYNCGATE_ORDER_DEADLINE)", "(default 8h; env ASYNCGATE_ADMIN_SESSION_TTL)", "(env ASYNCGATE_REDIS)"} {
		if !strings.Contains(apiOut, want) {
			t.Errorf("api -h lacks %q", want)
		}
	}
	for _, want := range []string{"\nWorkers:\n", "(default 15s; env ASYNCGATE_RECONCILE_INTERVAL)", "(default 2s; env ASYNCGATE_DOWNSTREAM_TIMEOUT)"} {
		if !strings.Contains(workerOut, want) {
			t.Errorf("worker -h lacks %q", want)
		}
	}
	if regexp.MustCompile(`[hm]0[sm]`).MatchString(apiOut + workerOut) {
		t.Error("help shows Go duration noise such as 15m0s")
	}
	// Every flag of every command says its variable.
	for _, out := range []string{apiOut, workerOut} {
		if n, m := strings.Count(out, "\n  --"), strings.Count(out, "env ASYNCGATE_"); n != m {
			t.Errorf("%d flags but %d variables in:\n%s", n, m, out)
		}
	}
}

// A bad value names the flag and shows an accepted form.
func TestCLIBadValueNamesFlag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"api", "--redis", "redis://127.0.0.1:1", "--rate-limit", "bogus"}, []string{"--rate-limit", "100/s"}},
		{[]string{"worker", "--concurrency", "lots"}, []string{"--concurrency", "such as 50"}},
		{[]string{"api", "--order-deadline", "10"}, []string{"--order-deadline", "such as 15m"}},
	} {
		out, code := runBinary(t, 30*time.Second, tt.args...)
		if code == 0 {
			t.Errorf("asyncgate %v exited 0", tt.args)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("asyncgate %v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}

// serve, api and worker stop within seconds when Redis does not answer,
// naming its address (before, they started and logged dial errors forever).
func TestCLIUnreachableRedisExits(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, cmd := range []string{"serve", "api", "worker"} {
		args := []string{cmd, "--redis", "redis://" + addr, "--redis-wait", "1s", "--addr", "127.0.0.1:0",
			"--portfolio-url", "http://127.0.0.1:1", "--execution-url", "http://127.0.0.1:1", "--api-keys", "k-0123456789abcdef=acme"}
		if cmd == "api" {
			args = slicesWithout(args, "--execution-url", "http://127.0.0.1:1")
		}
		if cmd == "worker" {
			args = slicesWithout(args, "--addr", "127.0.0.1:0")
			args = slicesWithout(args, "--api-keys", "k-0123456789abcdef=acme")
		}
		start := time.Now()
		out, code := runBinary(t, 60*time.Second, args...)
		if code == 0 {
			t.Errorf("%s exited 0", cmd)
		}
		if !strings.Contains(out, addr) || !strings.Contains(out, "did not answer") {
			t.Errorf("%s: output does not name Redis at %s:\n%s", cmd, addr, out)
		}
		t.Logf("%s gave up after %s", cmd, time.Since(start).Round(time.Millisecond))
	}
}

func slicesWithout(args []string, flag, value string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag && i+1 < len(args) && args[i+1] == value {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// --webhook-allow-private (and -http, -cidrs) are flags as well as variables.
func TestWebhookGuardFlags(t *testing.T) {
	t.Parallel()
	var o options
	cf := newFlags("api", env(map[string]string{"ASYNCGATE_WEBHOOK_ALLOW_HTTP": "true"}), &o)
	if err := cf.Parse([]string{"--webhook-allow-private", "--webhook-allow-cidrs", "10.1.0.0/16", "--api-keys", "k-0123456789abcdef=acme"}, io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.appConfig(true, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Webhooks.Guard
	if !g.AllowPrivate || !g.AllowHTTP || len(g.Allow) != 1 || g.Allow[0].String() != "10.1.0.0/16" {
		t.Errorf("guard %+v", g)
	}
	// dev allows both by default, serve neither.
	var d, s options
	newFlags("dev", env(nil), &d)
	newFlags("serve", env(nil), &s)
	if !d.webhooks.allowPrivate || !d.webhooks.allowHTTP || s.webhooks.allowPrivate || s.webhooks.allowHTTP {
		t.Errorf("defaults: dev %+v, serve %+v", d.webhooks, s.webhooks)
	}
}

// --event-retention reaches the webhook store's config; 7 days by default.
func TestEventRetentionFlag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 7 * 24 * time.Hour},
		{[]string{"--event-retention", "36h"}, 36 * time.Hour},
	} {
		var o options
		cf := newFlags("api", env(nil), &o)
		if err := cf.Parse(append(tt.args, "--api-keys", "k-0123456789abcdef=acme"), io.Discard, ""); err != nil {
			t.Fatal(err)
		}
		cfg, err := o.appConfig(true, false, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Webhooks.Store.EventRetention; got != tt.want {
			t.Errorf("%v: event retention %s, want %s", tt.args, got, tt.want)
		}
	}
}

// Durations in the logs read as people write them: "1.5s", not the JSON
// handler's 1500000000 nanoseconds.
func TestLogDurationsReadable(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "text"} {
		o := options{logFormat: format, logLevel: "info"}
		var out strings.Builder
		log, err := o.logger(&out)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("retry", "delay", 1500*time.Millisecond, "deadline", 2*time.Hour)
		for _, bad := range []string{"1500000000", "2h0m0s"} {
			if strings.Contains(out.String(), bad) {
				t.Errorf("%s log %q has %s", format, out.String(), bad)
			}
		}
		if !strings.Contains(out.String(), "1.5s") || !strings.Contains(out.String(), "2h") {
			t.Errorf("%s log %q lacks 1.5s and 2h", format, out.String())
		}
	}
}

// --webhook-retry-schedule (or its variable) sets the waits between a
// failing delivery's attempts, where deliveries run; none sets the default.
func TestWebhookRetryScheduleFlag(t *testing.T) {
	t.Parallel()
	var o options
	cf := newFlags("dev", env(map[string]string{"ASYNCGATE_WEBHOOK_RETRY_SCHEDULE": "1m"}), &o)
	if err := cf.Parse([]string{"--webhook-retry-schedule", "1s, 5s,30s"}, io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.webhooks.config()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Deliverer.Schedule, []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("schedule %v, want %v", got, want)
	}
	var e options
	cf = newFlags("worker", env(map[string]string{"ASYNCGATE_WEBHOOK_RETRY_SCHEDULE": "2s,1m"}), &e)
	if err := cf.Parse(nil, io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	if got := e.webhooks.schedule; !slices.Equal(got, []time.Duration{2 * time.Second, time.Minute}) {
		t.Errorf("schedule from the variable %v", got)
	}
	var d options
	newFlags("serve", env(nil), &d)
	if d.webhooks.schedule != nil {
		t.Errorf("default schedule %v, want nil (the deliverer's default)", d.webhooks.schedule)
	}
	for _, bad := range []string{"soon", "1s,,5s", "-1s", "0s"} {
		var b options
		cf := newFlags("dev", env(nil), &b)
		err := cf.Parse([]string{"--webhook-retry-schedule", bad}, io.Discard, "")
		if err == nil || !strings.Contains(err.Error(), "--webhook-retry-schedule") || !strings.Contains(err.Error(), "1s,5s,30s") {
			t.Errorf("--webhook-retry-schedule %q: %v, want an error naming the flag with an example", bad, err)
		}
	}
}
