// Package relay follows a tenant's event feed (GET /v1/events) and
// forwards each event to a local URL as a signed Standard Webhooks request:
// the core of `asyncgate listen`, with which a receiver on a laptop, behind
// NAT, gets the same events, ids and bytes as a registered endpoint would.
package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/webhooks"
)

// Config configures Run.
type Config struct {
	// Client reads the feed.
	Client *client.Client
	// ForwardTo is the local receiver's URL.
	ForwardTo string
	// Secret signs the forwarded requests.
	Secret webhooks.Secret
	// StatePath is where the cursor (and the secret) are kept between
	// runs; "" keeps none.
	StatePath string
	// Start is the cursor to start from; Run saves its progress to
	// StatePath after each forward.
	Start string
	// HTTP sends the forwards. Defaults to a client with a 10s timeout.
	HTTP *http.Client
	// Out gets one line per forward and per retry.
	Out io.Writer
	// BackoffBase and BackoffMax shape the waits between attempts at a
	// failing receiver (or feed). Default to 250ms and 30s.
	BackoffBase, BackoffMax time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a receiver's redirect is its answer, as for webhooks
		}}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = 250 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = c.BackoffBase, c.BackoffMax
	b.Reset()
	return b
}

// State is what is kept between runs.
type State struct {
	// Cursor is where the feed resumes.
	Cursor string `json:"cursor"`
	// Secret is the signing secret made at the first run ("" when
	// --secret gives it).
	Secret string `json:"secret,omitempty"`
}

// DefaultStatePath is the state file of apiURL and apiKey under the user's
// cache directory: one per API and key, so that two tenants do not share a
// cursor. The key itself is not in the name, only a hash of it.
func DefaultStatePath(apiURL, apiKey string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (give --state): %w", err)
	}
	h := sha256.Sum256([]byte(strings.TrimRight(apiURL, "/") + "\x00" + apiKey))
	return filepath.Join(dir, "asyncgate", "listen-"+hex.EncodeToString(h[:8])+".json"), nil
}

// LoadState reads the state file; a missing one is the zero State.
func LoadState(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("state file %s: %w", path, err)
	}
	return s, nil
}

// SaveState writes the state file atomically, readable by its owner only
// (it may hold the signing secret).
func SaveState(path string, s State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".listen-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Run follows the feed from cfg.Start and forwards each event, in feed
// order, until ctx ends (then it returns nil) or the API refuses the key
// or the cursor (401, 403, 422: an error). An event is retried at the
// receiver with backoff until it answers 2xx: nothing is skipped. A failing
// feed (the API away) is retried likewise.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	state := State{Cursor: cfg.Start}
	if cfg.StatePath != "" {
		if old, err := LoadState(cfg.StatePath); err == nil {
			state.Secret = old.Secret
		}
	}
	feedBackoff := cfg.backoff()
	for ctx.Err() == nil {
		for ev, err := range cfg.Client.FollowEvents(ctx, state.Cursor) {
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if p, ok := errors.AsType[*client.Problem](err); ok && (p.Status == 401 || p.Status == 403 || p.Status == 422) {
					return fmt.Errorf("the feed refuses us: %w", err) // a wrong key or cursor: waiting will not fix it
				}
				d := feedBackoff.NextBackOff()
				fmt.Fprintf(cfg.Out, "%s  feed unavailable: %v; retrying in %s\n", stamp(cfg.Now()), err, d.Round(time.Millisecond))
				sleep(ctx, d)
				break
			}
			feedBackoff.Reset()
			if !forward(ctx, cfg, ev) {
				return nil // ctx ended
			}
			if ev.Cursor != state.Cursor {
				state.Cursor = ev.Cursor
				if cfg.StatePath != "" {
					if err := SaveState(cfg.StatePath, state); err != nil {
						fmt.Fprintf(cfg.Out, "%s  cannot save the cursor to %s: %v\n", stamp(cfg.Now()), cfg.StatePath, err)
					}
				}
			}
		}
	}
	return nil
}

// forward sends ev until the receiver answers 2xx; false when ctx ended
// first.
func forward(ctx context.Context, cfg Config, ev client.FeedEvent) bool {
	b := cfg.backoff()
	orderID := ev.Event.Data.Id.String()
	for {
		start := time.Now()
		status, err := send(ctx, cfg, ev)
		took := time.Since(start).Round(100 * time.Microsecond)
		if ctx.Err() != nil {
			return false
		}
		line := fmt.Sprintf("%s  %-16s order=%s  %s  ->", stamp(cfg.Now()), ev.Event.Type, orderID, ev.Event.Id)
		switch {
		case err != nil:
			line += fmt.Sprintf(" error: %v (%s)", err, took)
		default:
			line += fmt.Sprintf(" %d (%s)", status, took)
		}
		if err == nil && status >= 200 && status < 300 {
			fmt.Fprintln(cfg.Out, line)
			return true
		}
		d := b.NextBackOff()
		fmt.Fprintf(cfg.Out, "%s; retrying in %s\n", line, d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return false
		}
	}
}

// send makes one signed POST of the event's bytes to the receiver.
func send(ctx context.Context, cfg Config, ev client.FeedEvent) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.ForwardTo, strings.NewReader(string(ev.Raw)))
	if err != nil {
		return 0, err
	}
	for k, v := range webhooks.Headers(ev.Event.Id, cfg.Now(), ev.Raw, cfg.Secret) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "asyncgate-listen")
	res, err := cfg.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	return res.StatusCode, nil
}

func stamp(t time.Time) string { return t.Format("15:04:05") }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
