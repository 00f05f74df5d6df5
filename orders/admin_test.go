package orders_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/orders"
)

// idAt is a UUIDv7 made at t.
func idAt(t time.Time, n int) string {
	ms := uint64(t.UnixMilli())
	return fmt.Sprintf("%08x-%04x-7000-8000-%012x", ms>>16, ms&0xffff, n)
}

func TestCountCreatedSince(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	now := time.Now()
	at := func(d time.Duration, n int) func(*orders.Order) {
		return func(o *orders.Order) { o.ID = idAt(now.Add(d), n) }
	}
	newOrder(t, s, "acme", at(-2*time.Hour, 1))
	newOrder(t, s, "acme", at(-61*time.Minute, 2))
	newOrder(t, s, "acme", at(-59*time.Minute, 3))
	newOrder(t, s, "globex", at(-time.Minute, 4))
	o := newOrder(t, s, "globex", at(0, 5))
	l, err := s.Acquire(ctx, "globex", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l, orders.Change{To: orders.Rejected, Reason: "risk"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.CountCreatedSince(ctx, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := map[orders.Status]int64{orders.Pending: 2, orders.Rejected: 1}
	for _, st := range orders.Statuses {
		if got[st] != want[st] {
			t.Errorf("%s: %d, want %d (all: %v)", st, got[st], want[st], got)
		}
	}
	if id := idAt(now, 0); orders.IDLowerBound(now) > id || orders.IDLowerBound(now.Add(time.Millisecond)) <= id {
		t.Errorf("IDLowerBound(%s) = %s does not bound %s", now, orders.IDLowerBound(now), id)
	}
}

func TestListAllAndFind(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	now := time.Now()
	var want []string // newest first
	for i := range 7 {
		tenant := []string{"acme", "globex", "initech"}[i%3]
		o := newOrder(t, s, tenant, func(o *orders.Order) { o.ID = idAt(now.Add(time.Duration(i)*time.Second), i) })
		want = slices.Insert(want, 0, tenant+"/"+o.ID)
	}
	var got []string
	p := orders.ListParams{Limit: 3}
	for range 5 {
		page, next, err := s.ListAll(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page {
			got = append(got, o.Tenant+"/"+o.ID)
		}
		if next == "" {
			break
		}
		p.After = next
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages of 3: %v, want %v", got, want)
	}
	page, _, err := s.ListAll(ctx, orders.ListParams{Status: orders.Executed})
	if err != nil || len(page) != 0 {
		t.Errorf("executed: %d orders, %v", len(page), err)
	}
	found, err := s.Find(ctx, idAt(now.Add(4*time.Second), 4))
	if err != nil || len(found) != 1 || found[0].Tenant != "globex" {
		t.Errorf("Find: %v, %v", found, err)
	}
	if found, err := s.Find(ctx, idAt(now, 99)); err != nil || len(found) != 0 {
		t.Errorf("Find of an unknown id: %v, %v", found, err)
	}
}
