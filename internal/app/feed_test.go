package app_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// feedPage is GET /v1/events's answer.
type feedPage struct {
	Data []json.RawMessage
	Next string
}

func (a *api) feed(key, after string, limit int, wait string) feedPage {
	a.t.Helper()
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", jsonInt(limit))
	}
	if wait != "" {
		q.Set("wait", wait)
	}
	var p feedPage
	a.must(http.StatusOK, "GET", "/v1/events?"+q.Encode(), key, nil, &p)
	if p.Next == "" {
		a.t.Fatalf("feed page without next: %+v", p)
	}
	return p
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

// feedAll reads the feed from after to its end, limit events a page, and
// returns the events' bodies by id and their ids in feed order.
func (a *api) feedAll(key, after string, limit int) (map[string][]byte, []string, string) {
	a.t.Helper()
	bodies := map[string][]byte{}
	var ids []string
	for range 1000 {
		p := a.feed(key, after, limit, "")
		if len(p.Data) == 0 {
			return bodies, ids, after
		}
		if len(p.Data) > limit {
			a.t.Fatalf("page of %d, limit %d", len(p.Data), limit)
		}
		for _, raw := range p.Data {
			var ev eventBody
			if err := json.Unmarshal(raw, &ev); err != nil {
				a.t.Fatal(err)
			}
			bodies[ev.ID] = raw
			ids = append(ids, ev.ID)
		}
		after = p.Next
	}
	a.t.Fatal("the feed never ends")
	return nil, nil, ""
}

// TestEventFeedMatchesTheWebhooksAfterAnOutage: an endpoint's receiver is
// down while orders end; once it is back it gets every event, and the
// feed lists the same events: the same ids (webhook-id), the same bytes,
// each once, and a feed reader that was away reads them from its cursor.
func TestEventFeedMatchesTheWebhooksAfterAnOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	start := a.feed(apiKey, "", 0, "")
	if len(start.Data) != 0 {
		t.Fatalf("a new tenant's feed holds %d events", len(start.Data))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ep, _ := a.createEndpoint(apiKey, "http://"+addr+"/hooks")

	const n = 4
	var placed []string
	for i := range n {
		o := b.place(t, order(func(m map[string]any) {
			if i%2 == 1 {
				m["quantity"] = 1e9 // rejected: insufficient funds
			}
		}))
		placed = append(placed, o.ID)
	}
	for _, id := range placed {
		b.waitTerminal(t, id, 30*time.Second)
	}
	pollUntil(t, 30*time.Second, "a failed attempt of every delivery", func() bool {
		list := a.deliveries(apiKey, ep.ID, "")
		if len(list) != n {
			return false
		}
		for _, d := range list {
			if d.AttemptCount < 1 {
				return false
			}
		}
		return true
	})

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	rcv := &hookReceiver{hits: make(chan hit, 100)}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(rcv.serve)}}
	srv.Start()
	t.Cleanup(srv.Close)
	hooks := map[string][]byte{}
	for len(hooks) < n {
		h := rcv.next(t)
		ev := decodeEvent(t, h)
		if h.header.Get("webhook-id") != ev.ID {
			t.Fatalf("webhook-id %s, body id %s", h.header.Get("webhook-id"), ev.ID)
		}
		hooks[ev.ID] = h.body
	}

	// The feed reader was away since start: it reads every event from
	// its cursor, each once, whatever the page size.
	fed, order1, _ := a.feedAll(apiKey, start.Next, 100)
	_, order2, _ := a.feedAll(apiKey, "", 1)
	if !slices.Equal(order1, order2) || len(order1) != n {
		t.Fatalf("feed by 100 = %v, by 1 = %v, want the same %d events", order1, order2, n)
	}
	for id, body := range hooks {
		if !bytes.Equal(fed[id], body) {
			t.Errorf("event %s: feed %s, webhook %s", id, fed[id], body)
		}
	}
	// Each order's event is its terminal change, under the id the
	// webhooks use.
	var want []string
	for _, id := range placed {
		o := b.waitTerminal(t, id, time.Second)
		want = append(want, webhooks.EventID("acme", id, o.Version))
	}
	slices.Sort(want)
	got := slices.Sorted(func(yield func(string) bool) {
		for id := range fed {
			if !yield(id) {
				return
			}
		}
	})
	equal(t, "feed event ids", got, want)

	// The other tenant sees none of it.
	if _, ids, _ := a.feedAll(otherKey, "", 100); len(ids) != 0 {
		t.Fatalf("globex reads %v from acme's feed", ids)
	}
}

// TestEventFeedWithoutEndpoints: a tenant with no endpoint and no
// callback_url still has its events in the feed (before the feed, such an
// order's event was never stored), long-polls wake on a new one, and bad
// queries get 422.
func TestEventFeedWithoutEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.api(t)
	o := b.place(t, order())
	done := b.waitTerminal(t, o.ID, 30*time.Second)
	var p feedPage
	pollUntil(t, 20*time.Second, "the order's event in the feed", func() bool {
		p = a.feed(apiKey, "", 10, "")
		return len(p.Data) == 1
	})
	var ev eventBody
	json.Unmarshal(p.Data[0], &ev)
	equal(t, "event", ev.ID+" "+ev.Type, webhooks.EventID("acme", o.ID, done.Version)+" order.executed")
	equal(t, "event order", ev.Data.ID+" "+string(ev.Data.Status), o.ID+" "+string(orders.Executed))
	if q := a.feed(otherKey, "", 10, ""); len(q.Data) != 0 {
		t.Fatalf("globex sees %d of acme's events", len(q.Data))
	}

	// Nothing newer: an empty page and the same cursor, also after a wait.
	if q := a.feed(apiKey, p.Next, 10, "100ms"); len(q.Data) != 0 || q.Next != p.Next {
		t.Fatalf("nothing newer: %+v, want empty with next %s", q, p.Next)
	}

	// A long-poll wakes when the next order ends.
	type res struct {
		page feedPage
		took time.Duration
	}
	woke := make(chan res, 1)
	go func() {
		began := time.Now()
		q := a.feed(apiKey, p.Next, 10, "60s")
		woke <- res{q, time.Since(began)}
	}()
	o2 := b.place(t, order())
	select {
	case r := <-woke:
		if len(r.page.Data) != 1 {
			t.Fatalf("woken long-poll: %+v", r.page)
		}
		json.Unmarshal(r.page.Data[0], &ev)
		equal(t, "woken with", ev.Data.ID, o2.ID)
		if r.took > 45*time.Second {
			t.Fatalf("the long-poll took %s: it waited out its wait", r.took)
		}
	case <-time.After(50 * time.Second):
		t.Fatal("the long-poll did not wake on a new event")
	}

	for _, q := range []string{"after=nope", "limit=0", "limit=101", "wait=soon", "after=1-2-3"} {
		r := a.call("GET", "/v1/events?"+q, apiKey, nil)
		if r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s, want 422", q, r.status, r.body)
		}
	}
	if r := a.call("GET", "/v1/events", "not-a-key-0123456789", nil); r.status != http.StatusUnauthorized {
		t.Errorf("without a valid key: %d", r.status)
	}
}
