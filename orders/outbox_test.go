package orders_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/orders"
)

func TestTerminalTransitionFillsOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	ended := newOrder(t, s, "acme")
	inFlight := newOrder(t, s, "acme")
	otherTenant := newOrder(t, s, "globex")

	outbox := func(tenant string) []string {
		t.Helper()
		ids, err := s.Outbox(ctx, tenant, time.Now().Add(time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	move := func(o *orders.Order, to ...orders.Status) {
		t.Helper()
		l, err := s.Acquire(ctx, o.Tenant, o.ID, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range to {
			if err := s.Transition(ctx, l, orders.Change{To: st}); err != nil {
				t.Fatalf("transition to %s: %v", st, err)
			}
		}
	}

	move(inFlight, orders.Validated)
	if got := outbox("acme"); len(got) != 0 {
		t.Fatalf("outbox after a non-terminal change = %v, want empty", got)
	}
	move(ended, orders.Validated, orders.Rejected)
	move(otherTenant, orders.Cancelled)
	if diff := cmp.Diff([]string{ended.ID}, outbox("acme")); diff != "" {
		t.Errorf("acme outbox (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{otherTenant.ID}, outbox("globex")); diff != "" {
		t.Errorf("globex outbox (-want +got):\n%s", diff)
	}
	// Entries recorded after the cut-off are not returned.
	if got, err := s.Outbox(ctx, "acme", time.Now().Add(-time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("outbox before an hour ago = %v, %v; want empty", got, err)
	}

	if err := s.OutboxDone(ctx, "acme", ended.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.OutboxDone(ctx, "acme", ended.ID); err != nil {
		t.Fatalf("second OutboxDone: %v", err)
	}
	if got := outbox("acme"); len(got) != 0 {
		t.Errorf("outbox after OutboxDone = %v, want empty", got)
	}
}
