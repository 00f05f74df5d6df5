package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/downstream"
)

func TestResilienceFlags(t *testing.T) {
	t.Parallel()
	var o options
	cf := newFlags("worker", env(map[string]string{"ASYNCGATE_EXECUTION_MAX_CONCURRENT": "7"}), &o)
	err := cf.Parse([]string{"--portfolio-url", "http://p", "--execution-url", "http://e", "--shared-breakers=false",
		"--portfolio-breaker", "failure_ratio=0.25, window=30s,min_calls=20,open_timeout=2s,probes=3,consecutive_failures=3",
		"--execution-breaker", "open_timeout=10s"}, io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.appConfig(false, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.IsolatedBreakers {
		t.Error("--shared-breakers=false did not isolate the breakers")
	}
	want := downstream.BreakerConfig{FailureRatio: 0.25, Interval: 30 * time.Second, MinRequests: 20, OpenTimeout: 2 * time.Second, HalfOpenProbes: 3, ConsecutiveFailures: 3}
	if diff := cmp.Diff(want, cfg.Portfolio.Breaker); diff != "" {
		t.Errorf("portfolio breaker (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(downstream.BreakerConfig{OpenTimeout: 10 * time.Second}, cfg.Execution.Breaker); diff != "" {
		t.Errorf("execution breaker (-want +got):\n%s", diff)
	}
	if cfg.Execution.MaxConcurrent != 7 || cfg.Portfolio.MaxConcurrent != 0 {
		t.Errorf("max concurrent: execution %d, portfolio %d", cfg.Execution.MaxConcurrent, cfg.Portfolio.MaxConcurrent)
	}

	// An API gets the portfolio URL for GET /v1/portfolios; it does not need one.
	var api options
	cf = newFlags("api", env(nil), &api)
	if err := cf.Parse([]string{"--api-keys", "k-0123456789abcdef=acme", "--portfolio-url", "http://p"}, io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	if cfg, err := api.appConfig(true, false, slog.New(slog.DiscardHandler)); err != nil || cfg.Portfolio.BaseURL != "http://p" {
		t.Errorf("api: portfolio URL %q, err %v", cfg.Portfolio.BaseURL, err)
	}

	for _, bad := range []struct{ spec, want string }{
		{"failure_ratio=2", "failure_ratio"},
		{"window=-1s", "window"},
		{"min_calls=0", "min_calls"},
		{"probes=x", "probes"},
		{"consecutive_failures=0", "consecutive_failures"},
		{"open", "key=value"},
		{"speed=3", "unknown setting"},
	} {
		if _, err := parseBreaker(bad.spec); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("parseBreaker(%q) = %v, want an error about %s", bad.spec, err, bad.want)
		}
	}
}
