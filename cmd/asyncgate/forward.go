package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/internal/relay"
	"github.com/asyncgate/asyncgate/webhooks"
)

const listenSynopsis = `Follows your event feed (GET /v1/events) and forwards each event to a local
URL, signed with Standard Webhooks, so that a receiver on your laptop gets
your webhooks without a public address. Prints the signing secret (whsec_…)
at start and one line per forward; resumes where it stopped after a restart
(the cursor is kept in --state); retries a failing receiver with backoff,
never skipping an event.`

// runListen is `asyncgate listen`.
func runListen(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	cf := newCmdFlags("listen", getenv)
	var apiURL, apiKey, forwardTo, secret, statePath, replay string
	g := cf.Group("Listen")
	g.String(&apiURL, "api-url", "URL", "http://127.0.0.1:8080", "the asyncgate API to read the feed from")
	g.String(&apiKey, "api-key", "KEY", "", "your API key (required)")
	g.String(&forwardTo, "forward-to", "URL", "", "where to forward the events, such as http://localhost:3000/hooks (required)")
	g.String(&secret, "secret", "whsec_…", "", "the secret to sign with; empty: one made at the first run and kept in --state")
	g.String(&statePath, "state", "FILE", "", "where the cursor (and the secret made) are kept; empty: a file per API and key under the user's cache directory")
	g.Func("replay", "DURATION", "0s", "at the first run (no cursor kept yet), also forward the events of this long before now, such as 1h; 0s: only new ones", func(s string) error {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration such as 0s or 1h, not %q", s)
		}
		replay = strconv.FormatInt(int64(d), 10)
		return nil
	})
	if err := cf.Parse(args, stdout, listenSynopsis); err != nil {
		return err
	}
	if cf.envErr != nil {
		return cf.envErr
	}
	var errs []error
	if apiKey == "" {
		errs = append(errs, errors.New("--api-key is required (or ASYNCGATE_API_KEY)"))
	}
	if u, err := url.Parse(forwardTo); forwardTo == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--forward-to must be an http(s) URL such as http://localhost:3000/hooks, not %q", forwardTo))
	}
	var sec webhooks.Secret
	if secret != "" {
		var err error
		if sec, err = webhooks.ParseSecret(secret); err != nil {
			errs = append(errs, errors.New("--secret must be a whsec_ secret"))
		}
	}
	c, err := client.New(apiURL, apiKey)
	if err != nil {
		errs = append(errs, fmt.Errorf("--api-url: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if statePath == "" {
		if statePath, err = relay.DefaultStatePath(apiURL, apiKey); err != nil {
			return err
		}
	}
	state, err := relay.LoadState(statePath)
	if err != nil {
		return err
	}
	if sec.IsZero() {
		if state.Secret != "" {
			sec, err = webhooks.ParseSecret(state.Secret)
		} else {
			sec, err = webhooks.NewSecret()
			state.Secret = sec.String()
		}
		if err != nil {
			return fmt.Errorf("state file %s: %w", statePath, err)
		}
	}
	if state.Cursor == "" {
		// A cursor is the time an event was stored (ms) and a counter:
		// start from now, or from --replay before it.
		d, _ := strconv.ParseInt(replay, 10, 64)
		state.Cursor = strconv.FormatInt(time.Now().Add(-time.Duration(d)).UnixMilli(), 10) + "-0"
	}
	if err := relay.SaveState(statePath, state); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	fmt.Fprintf(stdout, "Forwarding your events from %s to %s (cursor %s, kept in %s)\n", apiURL, forwardTo, state.Cursor, statePath)
	fmt.Fprintf(stdout, "Your webhook signing secret is %s\n", sec.String())
	return relay.Run(ctx, relay.Config{Client: c, ForwardTo: forwardTo, Secret: sec, StatePath: statePath, Start: state.Cursor, Out: stdout})
}
