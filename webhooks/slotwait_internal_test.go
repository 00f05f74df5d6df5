package webhooks

import (
	"context"
	"testing"
	"time"
)

// TestLocalSlots: a target has at most max local holders; a waiter gets
// the slot a holder gives back, gives up after its bound or when its
// context ends, and the map forgets a target with no holder or waiter.
func TestLocalSlots(t *testing.T) {
	l := newLocalSlots(2)
	ep := Ref{Tenant: "acme", EndpointID: "ep1"}
	r1 := l.acquire(context.Background(), ep, 0)
	r2 := l.acquire(context.Background(), ep, 0)
	if r1 == nil || r2 == nil {
		t.Fatal("the first two holders did not get a slot at once")
	}
	if r := l.acquire(context.Background(), ep, 0); r != nil {
		t.Fatal("a third holder got a slot without waiting")
	}
	// Another target (a tenant's callbacks) has slots of its own.
	cb := l.acquire(context.Background(), Ref{Tenant: "acme"}, 0)
	if cb == nil {
		t.Fatal("the callbacks waited for the endpoint's slots")
	}
	cb()
	if r := l.acquire(context.Background(), ep, 20*time.Millisecond); r != nil {
		t.Fatal("a waiter got a slot none gave back")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := l.acquire(ctx, ep, time.Hour); r != nil {
		t.Fatal("a waiter with an ended context got a slot")
	}
	got := make(chan func(), 1)
	go func() { got <- l.acquire(context.Background(), ep, time.Minute) }()
	r1()
	select {
	case r3 := <-got:
		if r3 == nil {
			t.Fatal("the waiter gave up though a slot was given back")
		}
		r3()
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter did not get the slot given back")
	}
	r2()
	if n := l.targets(); n != 0 {
		t.Fatalf("%d targets left in the map with no holder, want 0", n)
	}
}

// TestLocalSlotsSlowTargetDoesNotWait: once a target's deliveries hold their
// slots longer than the bound, a delivery that finds them taken is turned
// away at once instead of holding its task slot for the bound; a fast
// target's deliveries still wait.
func TestLocalSlotsSlowTargetDoesNotWait(t *testing.T) {
	l := newLocalSlots(1)
	slow := Ref{Tenant: "acme", EndpointID: "slow"}
	const bound = 200 * time.Millisecond
	// The slow endpoint's deliveries hold their slot for twice the bound.
	for range 8 {
		r := l.acquire(context.Background(), slow, bound)
		if r == nil {
			t.Fatal("a free slot was not taken")
		}
		held := time.Now()
		for time.Since(held) < 2*bound {
			time.Sleep(bound / 4)
		}
		r()
	}
	hold := l.acquire(context.Background(), slow, bound)
	if hold == nil {
		t.Fatal("a free slot was not taken")
	}
	start := time.Now()
	if r := l.acquire(context.Background(), slow, bound); r != nil {
		t.Fatal("a delivery to a taken slot of a slow endpoint got a slot")
	}
	if d := time.Since(start); d >= bound {
		t.Fatalf("a delivery to a slow endpoint waited %v (the bound), want it turned away at once", d)
	}
	hold()

	// A fast endpoint's next delivery waits for the slot and gets it.
	fast := Ref{Tenant: "acme", EndpointID: "fast"}
	r := l.acquire(context.Background(), fast, bound)
	got := make(chan func(), 1)
	go func() { got <- l.acquire(context.Background(), fast, time.Minute) }()
	r()
	if r2 := <-got; r2 == nil {
		t.Fatal("a delivery to a fast endpoint did not wait for its slot")
	} else {
		r2()
	}
}
