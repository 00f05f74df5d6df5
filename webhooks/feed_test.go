package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/webhooks"
)

// feedIDs reads the whole feed of the tenant, limit events a page, and
// returns the events' ids in feed order.
func feedIDs(t *testing.T, s *webhooks.Store, tenant string, limit int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range 100 {
		page, err := s.Feed(context.Background(), tenant, cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) > limit {
			t.Fatalf("page of %d events, limit %d", len(page.Events), limit)
		}
		for _, raw := range page.Events {
			var ev webhooks.Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("feed event %s: %v", raw, err)
			}
			ids = append(ids, ev.ID)
		}
		if len(page.Events) == 0 {
			if page.Next != cursor && cursor != "" {
				t.Fatalf("empty page moved the cursor from %q to %q", cursor, page.Next)
			}
			return ids
		}
		cursor = page.Next
	}
	t.Fatal("feed never ended")
	return nil
}

func TestFeedListsPublishedEventsInOrderPerTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.endpoint(t, "acme", "http://127.0.0.1:9/in")
	var want []string
	for i := range 5 {
		cb := ""
		if i%2 == 0 {
			cb = "http://127.0.0.1:9/cb"
		}
		ev, _ := b.publish(t, "acme", cb)
		want = append(want, ev.ID)
	}
	other, _ := b.publish(t, "globex", "")
	// A retried fan-out of the same event adds nothing to the feed.
	ev, _ := b.publish(t, "acme", "")
	want = append(want, ev.ID)
	if _, err := b.store.Publish(context.Background(), "acme", ev, ""); err != nil {
		t.Fatal(err)
	}

	for _, limit := range []int{1, 2, 100} {
		got := feedIDs(t, b.store, "acme", limit)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: feed = %v, want %v", limit, got, want)
		}
	}
	if got := feedIDs(t, b.store, "globex", 10); len(got) != 1 || got[0] != other.ID {
		t.Fatalf("globex feed = %v, want only its own %s", got, other.ID)
	}
	if got := feedIDs(t, b.store, "initech", 10); len(got) != 0 {
		t.Fatalf("a tenant without events sees %v", got)
	}

	// The feed's bytes are the webhook's bytes.
	page, err := b.store.Feed(context.Background(), "acme", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	body, err := b.rdb.HGet(context.Background(), "ag:{acme}:wh:evt:"+want[0], "body").Result()
	if err != nil || string(page.Events[0]) != body {
		t.Fatalf("feed event %s differs from the stored webhook body %s (%v)", page.Events[0], body, err)
	}

	for _, bad := range []string{"x", "1-", "-1", "1-2-3", "99999999999999999999999-0"} {
		if _, err := b.store.Feed(context.Background(), "acme", bad, 10); !errors.Is(err, webhooks.ErrInvalidCursor) {
			t.Errorf("cursor %q: err = %v, want ErrInvalidCursor", bad, err)
		}
	}
}

func TestPublishUnsubscribedStoresTheEventForTheFeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	outbox := "ag:{acme}:outbox"
	if err := b.rdb.ZAdd(ctx, outbox, redis.Z{Score: 1, Member: "o1"}).Err(); err != nil {
		t.Fatal(err)
	}
	ev := &webhooks.Event{ID: webhooks.EventID("acme", "o1", 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now().UTC(), Sequence: 4, Data: []byte(`{"id":"o1"}`)}
	done, err := b.store.PublishUnsubscribed(ctx, "acme", ev, outbox, "o1")
	if err != nil || !done {
		t.Fatalf("no endpoints: done=%v err=%v, want done", done, err)
	}
	if n, _ := b.rdb.ZCard(ctx, outbox).Result(); n != 0 {
		t.Fatalf("outbox holds %d entries after the publish", n)
	}
	// Again (a second fast path, a redrive): no second feed entry.
	if _, err := b.store.PublishUnsubscribed(ctx, "acme", ev, outbox, "o1"); err != nil {
		t.Fatal(err)
	}
	if got := feedIDs(t, b.store, "acme", 10); fmt.Sprint(got) != fmt.Sprint([]string{ev.ID}) {
		t.Fatalf("feed = %v, want [%s]", got, ev.ID)
	}

	if _, _, err := b.store.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "http://127.0.0.1:9/in", Events: []string{"order.executed"}}); err != nil {
		t.Fatal(err)
	}
	b.rdb.ZAdd(ctx, outbox, redis.Z{Score: 1, Member: "o2"})
	ev2 := &webhooks.Event{ID: webhooks.EventID("acme", "o2", 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now().UTC(), Sequence: 4, Data: []byte(`{"id":"o2"}`)}
	done, err = b.store.PublishUnsubscribed(ctx, "acme", ev2, outbox, "o2")
	if err != nil || done {
		t.Fatalf("with an endpoint: done=%v err=%v, want left to the fan-out", done, err)
	}
	if n, _ := b.rdb.ZCard(ctx, outbox).Result(); n != 1 {
		t.Fatalf("outbox holds %d entries, want 1", n)
	}
	if got := feedIDs(t, b.store, "acme", 10); len(got) != 1 {
		t.Fatalf("feed = %v: the refused shortcut stored an event", got)
	}
}

func TestFeedRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) { o.store.EventRetention = time.Hour })
	old, _ := b.publish(t, "acme", "")
	b.clock.advance(59 * time.Minute)
	if got := feedIDs(t, b.store, "acme", 10); len(got) != 1 || got[0] != old.ID {
		t.Fatalf("within the retention: feed = %v", got)
	}
	b.clock.advance(2 * time.Minute)
	if got := feedIDs(t, b.store, "acme", 10); len(got) != 0 {
		t.Fatalf("past the retention: feed = %v, want empty", got)
	}
	// The event itself lives on for its deliveries (Retention, 30 days).
	if ttl, _ := b.rdb.PTTL(context.Background(), "ag:{acme}:wh:evt:"+old.ID).Result(); ttl < 29*24*time.Hour {
		t.Fatalf("event TTL %s, want the deliveries' retention", ttl)
	}
}

func TestWaitFeedWakesOnANewEvent(t *testing.T) {
	t.Parallel()
	// A poll of a minute: only the announcement can wake the wait in time.
	b := setup(t, func(o *options) { o.store.FeedPoll = time.Minute })
	w := b.store.WatchFeed(context.Background())
	t.Cleanup(func() { w.Close() })
	first, _ := b.publish(t, "acme", "")
	page, err := b.store.WaitFeed(context.Background(), "acme", "", 10)
	if err != nil || len(page.Events) != 1 {
		t.Fatalf("wait with an event there: %v, %v", page, err)
	}
	_ = first
	type res struct {
		page *webhooks.FeedPage
		err  error
		at   time.Time
	}
	got := make(chan res, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		p, err := b.store.WaitFeed(ctx, "acme", page.Next, 10)
		got <- res{p, err, time.Now()}
	}()
	// Another tenant's event does not answer the wait.
	time.Sleep(200 * time.Millisecond) // give the waiter time to subscribe; the check below does not depend on it
	b.publish(t, "globex", "")
	second, _ := b.publish(t, "acme", "")
	select {
	case r := <-got:
		if r.err != nil || len(r.page.Events) != 1 {
			t.Fatalf("woken wait: %v, %v", r.page, r.err)
		}
		var ev webhooks.Event
		json.Unmarshal(r.page.Events[0], &ev)
		if ev.ID != second.ID {
			t.Fatalf("woken with %s, want %s", ev.ID, second.ID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the wait did not wake on a new event")
	}

	// Nothing new: the wait ends empty with the cursor unchanged.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	last, _ := b.store.Feed(context.Background(), "acme", "", 10)
	p, err := b.store.WaitFeed(short, "acme", last.Next, 10)
	if err != nil || len(p.Events) != 0 || p.Next != last.Next {
		t.Fatalf("empty wait = %+v, %v", p, err)
	}
}
