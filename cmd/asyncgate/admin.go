package main

import (
	"fmt"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/human"
)

// adminOptions are the flags of the dashboard (/admin).
type adminOptions struct {
	sessionSecret  string
	sessionTTL     time.Duration
	queuesReadOnly bool
}

func (a adminOptions) apply(cfg *app.Config) error {
	if n := len(a.sessionSecret); n > 0 && n < 32 {
		return fmt.Errorf("--admin-session-secret must be at least 32 bytes, not %d", n)
	}
	if a.sessionSecret != "" {
		cfg.Admin.SessionSecret = []byte(a.sessionSecret)
	}
	if a.sessionTTL < time.Minute {
		return fmt.Errorf("--admin-session-ttl must be a minute or more, not %s", human.Duration(a.sessionTTL))
	}
	cfg.Admin.SessionTTL = a.sessionTTL
	cfg.AdminQueuesReadOnly = a.queuesReadOnly
	return nil
}
