package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/webhooks"
)

// webhookRetryOptions set the timing of failed deliveries:
//
//	--webhook-retry-schedule    the waits before each retry (default 5s,5m,30m,2h,5h,10h,10h)
//	--webhook-breaker-cooldown  how long an endpoint's open breaker postpones deliveries (default 30s)
type webhookRetryOptions struct {
	schedule []time.Duration // nil: webhooks.DefaultSchedule
	cooldown time.Duration
}

func (o *webhookRetryOptions) register(g *flagGroup) {
	def := make([]string, len(webhooks.DefaultSchedule))
	for i, d := range webhooks.DefaultSchedule {
		def[i] = human.Duration(d)
	}
	g.Func("webhook-retry-schedule", "DURATION,...", strings.Join(def, ","),
		"waits before each retry of a failed delivery; a delivery has 8 attempts, the last wait repeats",
		func(s string) error {
			o.schedule = nil
			for w := range strings.SplitSeq(s, ",") {
				d, err := time.ParseDuration(strings.TrimSpace(w))
				if err != nil || d <= 0 {
					return fmt.Errorf("want positive durations separated by commas, such as 5s,5m,30m, not %q", s)
				}
				o.schedule = append(o.schedule, d)
			}
			return nil
		})
	g.Duration(&o.cooldown, "webhook-breaker-cooldown", 30*time.Second,
		"how long an endpoint's open breaker postpones its deliveries before one attempt probes it (doubles while it keeps failing)")
}
