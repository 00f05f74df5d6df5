package orders_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/orders"
)

var risk = orders.Risk{MarketPrice: 100, MaxNotional: 1e6}

// AcquireValidate moves a pending order to validated in the lease script:
// the order, its log, the status indexes and the announcement end as a
// Transition leaves them, and running it again (a redelivered task) only
// leases the order.
func TestAcquireValidate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	ps := s.Client().Subscribe(ctx, s.ChangedChannel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	// Metadata that looks like the order's own fields must not confuse it.
	o := newOrder(t, s, "acme", func(o *orders.Order) {
		o.Metadata = map[string]string{"status": "pending", "updated_at": "x", "version": "1"}
	})
	before := time.Now().UTC().Truncate(time.Millisecond)
	l, err := s.AcquireValidate(ctx, "acme", o.ID, time.Minute, risk)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Validated || l.Order.Status != orders.Validated || l.Order.Version != 2 || l.Token != 1 {
		t.Fatalf("lease after AcquireValidate: validated %v, %+v, token %d", l.Validated, l.Order, l.Token)
	}
	got, err := s.Get(ctx, "acme", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != orders.Validated || got.Version != 2 || got.UpdatedAt.Before(before) || !got.CreatedAt.Equal(o.CreatedAt) ||
		got.Metadata["status"] != "pending" || got.Quantity != o.Quantity {
		t.Fatalf("stored order: %+v", got)
	}
	evs, err := s.Events(ctx, "acme", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Seq != 2 || evs[1].Status != orders.Validated || evs[1].Type != orders.StatusEvent(orders.Validated) {
		t.Fatalf("events: %+v", evs)
	}
	if ids, _, _ := s.List(ctx, "acme", orders.ListParams{Status: orders.Validated}); len(ids) != 1 {
		t.Fatalf("validated index holds %d orders, want 1", len(ids))
	}
	if ids, _, _ := s.List(ctx, "acme", orders.ListParams{Status: orders.Pending}); len(ids) != 0 {
		t.Fatalf("pending index holds %d orders, want 0", len(ids))
	}
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for { // other tests share the Redis and its channel
		m, err := ps.ReceiveMessage(mctx)
		if err != nil {
			t.Fatalf("the change was not announced: %v", err)
		}
		if m.Payload == "acme/"+o.ID {
			break
		}
	}
	// The next steps go on from the validated order under this lease.
	if err := s.Transition(ctx, l, orders.Change{To: orders.FundsReserved}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	again, err := s.AcquireValidate(ctx, "acme", o.ID, time.Minute, risk)
	if err != nil {
		t.Fatal(err)
	}
	if again.Validated || again.Order.Status != orders.FundsReserved || again.Order.Version != 3 {
		t.Fatalf("second AcquireValidate: validated %v, %+v", again.Validated, again.Order)
	}
}

// An order over the risk limit, or one with a cancel asked, stays pending
// for the saga's own steps; a limit order's own price counts.
func TestAcquireValidateLeavesPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	lp := 5.0
	for _, tc := range []struct {
		name     string
		mut      func(*orders.Order)
		cancel   bool
		validate bool
	}{
		{"within the limit", func(o *orders.Order) { o.Quantity = 10_000 }, false, true},
		{"over the limit", func(o *orders.Order) { o.Quantity = 10_001 }, false, false},
		{"limit price counts", func(o *orders.Order) { o.Quantity = 200_000; o.Type = orders.Limit; o.LimitPrice = &lp }, false, true},
		{"cancel asked", func(o *orders.Order) {}, true, false},
	} {
		o := newOrder(t, s, "acme", tc.mut)
		if tc.cancel {
			if err := s.RequestCancel(ctx, "acme", o.ID); err != nil {
				t.Fatal(err)
			}
		}
		l, err := s.AcquireValidate(ctx, "acme", o.ID, time.Minute, risk)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want := orders.Pending
		if tc.validate {
			want = orders.Validated
		}
		got, _ := s.Get(ctx, "acme", o.ID)
		if l.Validated != tc.validate || l.Order.Status != want || got.Status != want {
			t.Errorf("%s: lease validated %v status %s, stored %s; want %s", tc.name, l.Validated, l.Order.Status, got.Status, want)
		}
	}
}

// The funds_reserved transition marks the point of no return in the same
// script when asked, unless a cancel came first: then BeginExecute says
// the order must be compensated.
func TestTransitionBeginsExecute(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	o := newOrder(t, s, "acme")
	l, err := s.AcquireValidate(ctx, "acme", o.ID, time.Minute, risk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l, orders.Change{To: orders.FundsReserved, BeginExecute: true}); err != nil {
		t.Fatal(err)
	}
	if !l.Executing {
		t.Fatal("the lease does not say execution began")
	}
	if err := s.RequestCancel(ctx, "acme", o.ID); !errors.Is(err, orders.ErrTooLate) {
		t.Fatalf("cancel after the folded begin: %v, want ErrTooLate", err)
	}
	if c, _ := s.Control(ctx, "acme", o.ID); !c.Executing {
		t.Fatal("the order is not marked executing")
	}

	o2 := newOrder(t, s, "acme")
	l2, err := s.AcquireValidate(ctx, "acme", o2.ID, time.Minute, risk)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestCancel(ctx, "acme", o2.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l2, orders.Change{To: orders.FundsReserved, BeginExecute: true}); err != nil {
		t.Fatal(err)
	}
	if l2.Executing {
		t.Fatal("execution began although a cancel came first")
	}
	if err := s.BeginExecute(ctx, l2); !errors.Is(err, orders.ErrCompensate) {
		t.Fatalf("begin execute after cancel: %v, want ErrCompensate", err)
	}
}
