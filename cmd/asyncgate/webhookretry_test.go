package main

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWebhookRetryFlags(t *testing.T) {
	var o options
	cf := newFlags("worker", env(map[string]string{"ASYNCGATE_WEBHOOK_BREAKER_COOLDOWN": "2s"}), &o)
	if err := cf.Parse([]string{"--webhook-retry-schedule", "1s, 2s,1m", "--portfolio-url", "http://p", "--execution-url", "http://e"}, io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.appConfig(false, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Webhooks.Deliverer; !slices.Equal(d.Schedule, []time.Duration{time.Second, 2 * time.Second, time.Minute}) || d.BreakerCooldown != 2*time.Second {
		t.Errorf("schedule %v, cooldown %s", d.Schedule, d.BreakerCooldown)
	}

	var def options
	newFlags("worker", env(nil), &def)
	if def.webhooks.schedule != nil || def.webhooks.cooldown != 30*time.Second {
		t.Errorf("defaults: %+v", def.webhooks)
	}

	var bad options
	cf = newFlags("worker", env(nil), &bad)
	if err := cf.Parse([]string{"--webhook-retry-schedule", "1s,0s"}, io.Discard, ""); err == nil || !strings.Contains(err.Error(), "positive durations") {
		t.Errorf("a zero wait: %v", err)
	}
}
