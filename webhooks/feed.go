package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/fanout"
	"github.com/redis/go-redis/v9"
)

// The event feed is the tenant's events, oldest first, for receivers that
// pull instead of being pushed (GET /v1/events, asyncgate listen). It is
// not a second copy of the events: a Redis stream per tenant (keys.feed)
// holds only event ids, appended by the same script that stores the event
// (Publish, PublishUnsubscribed), so the feed has exactly the events the
// webhooks carry, with the same ids and bytes, in the order they were
// stored. The stream's entry ids are the feed's cursors. Entries older
// than StoreConfig.EventRetention are trimmed as new ones come in and
// skipped on read.

// ErrInvalidCursor: a feed cursor that is not one the feed handed out.
var ErrInvalidCursor = errors.New("webhooks: invalid event feed cursor")

// luaFeedAdd appends an event id to a tenant's feed, trims entries older
// than minid (approximately: whole stream nodes) and announces the tenant
// on the feed channel, for long-polls.
const luaFeedAdd = `
local function feedAdd(key, evt, minid, chan, tenant)
  redis.call('XADD', key, 'MINID', '~', minid, '*', 'e', evt)
  redis.call('PUBLISH', chan, tenant)
end
`

// feedArgs are the arguments of feedAdd after the event id: the trim
// boundary, the channel and the tenant.
func (s *Store) feedArgs(tenant string, now time.Time) []any {
	return []any{strconv.FormatInt(now.Add(-s.cfg.EventRetention).UnixMilli(), 10), s.k.feedChannel(), tenant}
}

// eventTTL is how long a stored event is kept: as long as its deliveries,
// and at least as long as the feed lists it.
func (s *Store) eventTTL() int64 {
	return max(s.cfg.Retention, s.cfg.EventRetention).Milliseconds()
}

var publishUnsubscribedScript = redis.NewScript(luaFeedAdd + `
if redis.call('HLEN', KEYS[1]) > 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'body', ARGV[2], 'type', ARGV[3], 'deliveries', '', 'created', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  feedAdd(KEYS[4], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// PublishUnsubscribed is Publish's shortcut for a tenant without
// endpoints and an order without callback_url: when the tenant has no
// endpoint at all, it stores the event (for the feed; it has no delivery)
// and removes orderID from outboxKey (a key of the same tenant, hence the
// same slot) in one script, and reports true. Otherwise it changes nothing
// and reports false: the caller fans out as usual. Checking and storing in
// one script means an endpoint registered a moment later is not owed this
// event, exactly as if the fan-out had run first. ErrEventTooLarge.
func (s *Store) PublishUnsubscribed(ctx context.Context, tenant string, ev *Event, outboxKey, orderID string) (bool, error) {
	body, err := ev.Body()
	if err != nil {
		return false, fmt.Errorf("encode event: %w", err)
	}
	if len(body) > s.cfg.MaxEventBytes {
		return false, fmt.Errorf("%w: %d bytes, at most %d", ErrEventTooLarge, len(body), s.cfg.MaxEventBytes)
	}
	now := s.cfg.Now()
	args := append([]any{orderID, body, ev.Type, now.UnixMilli(), s.eventTTL(), ev.ID}, s.feedArgs(tenant, now)...)
	n, err := publishUnsubscribedScript.Run(ctx, s.rdb,
		[]string{s.k.subscriptions(tenant), outboxKey, s.k.event(tenant, ev.ID), s.k.feed(tenant)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("publish event: %w", err)
	}
	return n == 1, nil
}

// FeedPage is a page of a tenant's event feed.
type FeedPage struct {
	// Events are the events' bodies as the webhooks send them, oldest first.
	Events []json.RawMessage
	// Next is the cursor to read on from: after the last event of the page,
	// or the cursor read from when the page is empty.
	Next string
}

var cursorRe = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ValidCursor reports whether c is a feed cursor: "" (the start) or one the
// feed handed out.
func ValidCursor(c string) bool { return c == "" || cursorRe.MatchString(c) }

// Feed returns up to limit of the tenant's events stored after cursor
// after ("": from the oldest kept), oldest first. ErrInvalidCursor.
func (s *Store) Feed(ctx context.Context, tenant, after string, limit int) (*FeedPage, error) {
	if !ValidCursor(after) {
		return nil, ErrInvalidCursor
	}
	if limit <= 0 {
		limit = 100
	}
	start := "-"
	if after != "" {
		start = "(" + after
	}
	// The retention holds to the millisecond on read, whatever the trim
	// left behind.
	cutoff := s.cfg.Now().Add(-s.cfg.EventRetention).UnixMilli()
	if ms, _, _ := parseCursor(after); ms < cutoff {
		start = strconv.FormatInt(cutoff, 10)
	}
	page := &FeedPage{Events: []json.RawMessage{}, Next: after}
	if page.Next == "" {
		page.Next = "0-0"
	}
	for len(page.Events) < limit {
		msgs, err := s.rdb.XRangeN(ctx, s.k.feed(tenant), start, "+", int64(limit-len(page.Events))).Result()
		if err != nil {
			return nil, fmt.Errorf("read event feed: %w", err)
		}
		if len(msgs) == 0 {
			break
		}
		cmds := make([]*redis.StringCmd, len(msgs))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range msgs {
				id, _ := m.Values["e"].(string)
				cmds[i] = p.HGet(ctx, s.k.event(tenant, id), "body")
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read feed events: %w", err)
		}
		for i, c := range cmds {
			page.Next = msgs[i].ID
			if body, err := c.Result(); err == nil {
				page.Events = append(page.Events, json.RawMessage(body))
			} // else expired: skipped
		}
		start = "(" + page.Next
	}
	return page, nil
}

// parseCursor splits a stream id; "" is 0-0.
func parseCursor(c string) (ms, seq int64, ok bool) {
	a, b, found := strings.Cut(c, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseInt(a, 10, 64)
	seq, err2 := strconv.ParseInt(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// WaitFeed is Feed, but when nothing is newer than after it waits until
// something is or ctx ends (then with the empty page and no error). With a
// running FeedWatcher it wakes on the announcement of a new event; the
// store also reads again every StoreConfig.FeedPoll, the bound on how long
// a lost announcement can delay the answer.
func (s *Store) WaitFeed(ctx context.Context, tenant, after string, limit int) (*FeedPage, error) {
	var ch <-chan struct{}
	if w := s.feedWatcher.Load(); w != nil {
		c, cancel := w.subscribe(tenant)
		defer cancel()
		ch = c
	}
	read := context.WithoutCancel(ctx)
	page, err := s.Feed(read, tenant, after, limit)
	if err != nil || len(page.Events) > 0 {
		return page, err
	}
	t := time.NewTicker(s.cfg.FeedPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return page, nil
		case <-ch:
		case <-t.C:
		}
		if page, err = s.Feed(read, tenant, page.Next, limit); err != nil || len(page.Events) > 0 {
			return page, err
		}
	}
}

// FeedWatcher fans the announcements of new events out to the process's
// waiting long-polls over one shared pub/sub connection.
type FeedWatcher struct {
	hub *fanout.Hub
}

// WatchFeed subscribes to the feed channel until Close; WaitFeed uses the
// last watcher started.
func (s *Store) WatchFeed(ctx context.Context) *FeedWatcher {
	w := &FeedWatcher{hub: fanout.New(s.rdb.Subscribe(ctx, s.k.feedChannel()))}
	s.feedWatcher.Store(w)
	return w
}

func (w *FeedWatcher) subscribe(tenant string) (<-chan struct{}, func()) {
	return w.hub.Subscribe(tenant)
}

// Close ends the subscription.
func (w *FeedWatcher) Close() error { return w.hub.Close() }
