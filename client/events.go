package client

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"strconv"
	"time"
)

// FeedEvent is one event of the tenant's event feed (GET /v1/events).
type FeedEvent struct {
	// Event is the event, decoded.
	Event WebhookEvent
	// Raw is the event's body exactly as the webhooks send it: verify or
	// forward these bytes, not a re-encoding of Event.
	Raw json.RawMessage
	// Cursor is where to resume the feed once this event is handled: the
	// feed's cursor after it, or, inside a page, the cursor before the
	// page (a resume then reads some handled events again, with the same
	// ids: the feed, like the webhooks, is at least once).
	Cursor string
}

// rawFeedPage is a page of the feed with the events' bytes kept.
type rawFeedPage struct {
	Data []json.RawMessage `json:"data"`
	Next string            `json:"next"`
}

// EventPage reads one page of the feed: up to limit events (the server's
// default if 0) after the cursor after ("": the oldest kept), oldest first,
// and the cursor to pass next. With wait > 0 and nothing newer, the server
// holds the request until an event arrives or the wait ends (then the page
// is empty and the cursor unchanged).
func (c *Client) EventPage(ctx context.Context, after string, limit int, wait time.Duration) ([]FeedEvent, string, error) {
	params := ListEventsParams{}
	if after != "" {
		params.After = &after
	}
	if limit > 0 {
		params.Limit = &limit
	}
	if wait > 0 {
		w := strconv.FormatInt(wait.Milliseconds(), 10) + "ms"
		params.Wait = &w
	}
	var page rawFeedPage
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.ListEvents(ctx, &params)
	}, &page)
	if err != nil {
		return nil, "", err
	}
	out := make([]FeedEvent, len(page.Data))
	for i, raw := range page.Data {
		out[i] = FeedEvent{Raw: raw, Cursor: after}
		if err := json.Unmarshal(raw, &out[i].Event); err != nil {
			return nil, "", fmt.Errorf("client: decode feed event: %w", err)
		}
	}
	if n := len(out); n > 0 {
		out[n-1].Cursor = page.Next
	}
	return out, page.Next, nil
}

// FeedEvents iterates over the feed from the cursor after ("": the oldest
// event kept) to its current end, page after page. An error is yielded
// once, with a zero FeedEvent, and ends the iteration.
func (c *Client) FeedEvents(ctx context.Context, after string) iter.Seq2[FeedEvent, error] {
	return c.follow(ctx, after, 0)
}

// FollowEvents is FeedEvents that does not stop at the end of the feed: it
// long-polls for the next events until ctx ends or a call fails (after the
// client's retries), and yields that error once. Resume with the Cursor of
// the last event handled.
func (c *Client) FollowEvents(ctx context.Context, after string) iter.Seq2[FeedEvent, error] {
	return c.follow(ctx, after, followWait)
}

// followWait is the wait of each long-poll of FollowEvents.
const followWait = 30 * time.Second

func (c *Client) follow(ctx context.Context, after string, wait time.Duration) iter.Seq2[FeedEvent, error] {
	return func(yield func(FeedEvent, error) bool) {
		for {
			evs, next, err := c.EventPage(ctx, after, 0, wait)
			if err != nil {
				yield(FeedEvent{}, err)
				return
			}
			for _, ev := range evs {
				if !yield(ev, nil) {
					return
				}
			}
			after = next
			if len(evs) == 0 && wait == 0 {
				return
			}
			if err := ctx.Err(); err != nil {
				yield(FeedEvent{}, err)
				return
			}
		}
	}
}
