package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/webhooks"
)

// webhookOptions say where webhooks may go:
//
//	--webhook-allow-http     plain http URLs are accepted
//	--webhook-allow-private  loopback and private addresses are accepted
//	--webhook-allow-cidrs    ranges accepted whatever their kind, comma-separated
//
// Both booleans default to false, and to true under `asyncgate dev`, so that
// a developer can point webhooks at a local receiver. Link-local and cloud
// metadata addresses (169.254.169.254) stay refused unless a CIDR names them.
//
// and, where deliveries run (dev, serve, worker),
//
//	--webhook-retry-schedule    the waits before each retry, comma-separated
//	--webhook-breaker-cooldown  how long an endpoint's open breaker postpones deliveries
//
// which a developer (and the chaos suite) shortens to see a delivery retry and fail in minutes.
type webhookOptions struct {
	allowHTTP, allowPrivate bool
	allowCIDRs              string
	eventRetention          time.Duration   // --event-retention
	schedule                []time.Duration // nil: webhooks.DefaultSchedule
	cooldown                time.Duration
}

func (w *webhookOptions) register(cf *cmdFlags, r role) {
	g := cf.Group("Webhooks")
	g.Bool(&w.allowHTTP, "webhook-allow-http", r.dev, "accept plain http:// webhook URLs")
	g.Bool(&w.allowPrivate, "webhook-allow-private", r.dev,
		"accept webhook destinations on loopback and private addresses (10/8, 192.168/16, 127/8, …)")
	g.String(&w.allowCIDRs, "webhook-allow-cidrs", "CIDR,...", "",
		"address ranges accepted whatever their kind, such as 10.1.0.0/16 (link-local and metadata addresses need one)")
	g.Duration(&w.eventRetention, "event-retention", 7*24*time.Hour,
		"how long GET /v1/events (and asyncgate listen) lists an event; set the same on every API and worker")
	if r.worker {
		g.Func("webhook-retry-schedule", "DURATION,...", scheduleString(webhooks.DefaultSchedule),
			"the waits before each retry of a failed delivery; the last one repeats until the attempts are spent (1s,5s,30s tries a failing receiver in a minute)",
			func(s string) error {
				d, err := parseSchedule(s)
				if err != nil {
					return err
				}
				w.schedule = d
				return nil
			})
		g.Duration(&w.cooldown, "webhook-breaker-cooldown", 30*time.Second,
			"how long an endpoint's open breaker postpones its deliveries before one attempt probes it (doubles while it keeps failing)")
	}
}

// parseSchedule reads a comma-separated list of positive durations.
func parseSchedule(s string) ([]time.Duration, error) {
	var out []time.Duration
	for part := range strings.SplitSeq(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("want positive durations separated by commas, such as 1s,5s,30s, not %q", s)
		}
		out = append(out, d)
	}
	return out, nil
}

func scheduleString(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = human.Duration(d)
	}
	return strings.Join(parts, ",")
}

func (w *webhookOptions) config() (app.WebhooksConfig, error) {
	var cfg app.WebhooksConfig
	var errs []error
	cfg.Guard.AllowHTTP = w.allowHTTP
	cfg.Guard.AllowPrivate = w.allowPrivate
	if w.eventRetention <= 0 {
		errs = append(errs, errors.New("--event-retention: want a positive duration such as 168h"))
	}
	cfg.Store.EventRetention = w.eventRetention
	cfg.Deliverer.Schedule = w.schedule
	for c := range strings.SplitSeq(w.allowCIDRs, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("--webhook-allow-cidrs: %q is not a range such as 10.1.0.0/16", c))
			continue
		}
		cfg.Guard.Allow = append(cfg.Guard.Allow, p.Masked())
	}
	cfg.Deliverer.BreakerCooldown = w.cooldown
	return cfg, errors.Join(errs...)
}
