package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/asyncgate/asyncgate/internal/app"
)

// webhookConfig reads where webhooks may go from the environment:
//
//	ASYNCGATE_WEBHOOK_ALLOW_HTTP      true: plain http URLs are accepted
//	ASYNCGATE_WEBHOOK_ALLOW_PRIVATE   true: loopback and private addresses are accepted
//	ASYNCGATE_WEBHOOK_ALLOW_CIDRS     ranges accepted whatever their kind, comma-separated
//
// Both booleans default to false, and to true under `asyncgate dev`, so that
// a developer can point webhooks at a local receiver. Link-local and cloud
// metadata addresses (169.254.169.254) stay refused unless a CIDR names them.
func webhookConfig(getenv func(string) string, dev bool) (app.WebhooksConfig, error) {
	var cfg app.WebhooksConfig
	var errs []error
	boolean := func(name string, def bool) bool {
		v := getenv(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: want true or false, not %q", name, v))
		}
		return b
	}
	cfg.Guard.AllowHTTP = boolean("ASYNCGATE_WEBHOOK_ALLOW_HTTP", dev)
	cfg.Guard.AllowPrivate = boolean("ASYNCGATE_WEBHOOK_ALLOW_PRIVATE", dev)
	for c := range strings.SplitSeq(getenv("ASYNCGATE_WEBHOOK_ALLOW_CIDRS"), ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("ASYNCGATE_WEBHOOK_ALLOW_CIDRS: %q is not a range such as 10.1.0.0/16", c))
			continue
		}
		cfg.Guard.Allow = append(cfg.Guard.Allow, p.Masked())
	}
	return cfg, errors.Join(errs...)
}
