package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/asyncgate/asyncgate/internal/app"
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
type webhookOptions struct {
	allowHTTP, allowPrivate bool
	allowCIDRs              string
	retry                   webhookRetryOptions
}

func (w *webhookOptions) register(cf *cmdFlags, r role) {
	g := cf.Group("Webhooks")
	g.Bool(&w.allowHTTP, "webhook-allow-http", r.dev, "accept plain http:// webhook URLs")
	g.Bool(&w.allowPrivate, "webhook-allow-private", r.dev,
		"accept webhook destinations on loopback and private addresses (10/8, 192.168/16, 127/8, …)")
	g.String(&w.allowCIDRs, "webhook-allow-cidrs", "CIDR,...", "",
		"address ranges accepted whatever their kind, such as 10.1.0.0/16 (link-local and metadata addresses need one)")
	if r.worker {
		w.retry.register(g)
	}
}

func (w *webhookOptions) config() (app.WebhooksConfig, error) {
	var cfg app.WebhooksConfig
	var errs []error
	cfg.Guard.AllowHTTP = w.allowHTTP
	cfg.Guard.AllowPrivate = w.allowPrivate
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
	cfg.Deliverer.Schedule, cfg.Deliverer.BreakerCooldown = w.retry.schedule, w.retry.cooldown
	return cfg, errors.Join(errs...)
}
