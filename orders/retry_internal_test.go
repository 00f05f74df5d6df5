package orders

import (
	"context"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

// A client that loses the reply retries the same script call (go-redis does
// on network errors). Every write script must then answer as the first run did.
func TestScriptsSurviveARetriedCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewStore(redistest.Shared(t).NewClient(t), StoreConfig{})
	now := time.Now().UTC()
	o := &Order{ID: "01890000-0000-7000-8000-0000000000aa", Tenant: "acme", CreatedAt: now, Deadline: now.Add(time.Hour),
		Request: Request{AccountID: "a", Symbol: "AAPL", Side: Buy, Quantity: 1, Type: Market, ClientOrderID: "c-1"}}
	keys := []string{s.k.order("acme", o.ID), s.k.events("acme", o.ID), s.k.index("acme"), s.k.statusIndex("acme", Pending), s.k.active("acme"), s.k.clientIDs("acme")}
	args := []any{o.ID, docJSON(o), eventJSON(Event{Type: EventCreated, At: now, Order: o}), now.UnixMilli(), o.ClientOrderID}
	for i := range 2 {
		res, err := createScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err != nil || res[0] != "ok" {
			t.Fatalf("create run %d = %v, %v", i+1, res, err)
		}
	}
	if n, _ := s.rdb.LLen(ctx, s.k.events("acme", o.ID)).Result(); n != 1 {
		t.Fatalf("events after a retried create = %d, want 1", n)
	}
	// With a binding: the retried run finds its own and answers bound.
	o2 := *o
	o2.ID, o2.ClientOrderID = "01890000-0000-7000-8000-0000000000ab", ""
	bkeys := []string{s.k.order("acme", o2.ID), s.k.events("acme", o2.ID), s.k.index("acme"), s.k.statusIndex("acme", Pending), s.k.active("acme"), s.k.clientIDs("acme"), "ag:{acme}:idem:k"}
	bargs := []any{o2.ID, docJSON(&o2), eventJSON(Event{Type: EventCreated, At: now, Order: &o2}), now.UnixMilli(), "", "claim", "bound", 60000}
	s.rdb.Set(ctx, "ag:{acme}:idem:k", "claim", time.Minute)
	for i := range 2 {
		res, err := createScript.Run(ctx, s.rdb, bkeys, bargs...).StringSlice()
		if err != nil || res[0] != "ok" || res[2] != "1" {
			t.Fatalf("bound create run %d = %v, %v; want ok, bound", i+1, res, err)
		}
	}

	l, err := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Run the transition script twice with identical arguments.
	next := l.Order.Apply(Event{Type: StatusEvent(Validated), At: now, Status: Validated})
	tkeys := []string{s.k.order("acme", o.ID), s.k.events("acme", o.ID), s.k.statusIndex("acme", Pending), s.k.statusIndex("acme", Validated), s.k.active("acme"), s.k.releases("acme"), s.k.outbox("acme")}
	targs := []any{o.ID, "pending", "validated", l.Token, docJSON(&next), eventJSON(Event{Type: StatusEvent(Validated), At: now, Status: Validated}), 0, s.k.changed(), "acme/" + o.ID, "0", now.UnixMilli()}
	for i := range 2 {
		res, err := applyScript.Run(ctx, s.rdb, tkeys, targs...).StringSlice()
		if err != nil || res[0] != "ok" || res[1] != "2" {
			t.Fatalf("transition run %d = %v, %v; want ok 2", i+1, res, err)
		}
	}
	if n, _ := s.rdb.LLen(ctx, s.k.events("acme", o.ID)).Result(); n != 2 {
		t.Fatalf("events after a retried transition = %d, want 2", n)
	}
	// A different change from the old status is still a conflict.
	targs[2] = "rejected"
	if res, _ := applyScript.Run(ctx, s.rdb, tkeys, targs...).StringSlice(); res[0] != "conflict" {
		t.Fatalf("other transition = %v, want conflict", res)
	}
}
