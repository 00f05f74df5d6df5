package fanout_test

import (
	"context"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/fanout"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// TestHubDeliversByKey: a message reaches the waiters of its payload only,
// pending signals coalesce, and ending a subscription removes the waiter.
func TestHubDeliversByKey(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t, redistest.Options{}).NewClient(t)
	ps := rdb.Subscribe(ctx, "ch")
	if _, err := ps.Receive(ctx); err != nil { // the subscription is confirmed
		t.Fatal(err)
	}
	h := fanout.New(ps)

	a, cancelA := h.Subscribe("a")
	a2, cancelA2 := h.Subscribe("a")
	b, cancelB := h.Subscribe("b")
	defer cancelB()
	if n := h.Waiters(); n != 3 {
		t.Fatalf("Waiters = %d, want 3", n)
	}

	for range 2 {
		if err := rdb.Publish(ctx, "ch", "a").Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []<-chan struct{}{a, a2} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("waiter of a not signalled")
		}
	}
	// The message that woke a's waiters was handed out under one lock;
	// b's waiter must not have had it.
	if len(b) != 0 {
		t.Fatal("waiter of b signalled by a message for a")
	}
	if err := rdb.Publish(ctx, "ch", "b").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b:
	case <-time.After(10 * time.Second):
		t.Fatal("waiter of b not signalled")
	}

	cancelA()
	cancelA2()
	if n := h.Waiters(); n != 1 {
		t.Fatalf("Waiters after cancel = %d, want 1", n)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}
