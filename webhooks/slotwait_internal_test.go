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

// TestLocalSlotsBoundWaiters: beside the holders, at most maxWaiters wait;
// one more is turned away at once, even with a long bound, and gets a slot
// once the crowd has gone.
func TestLocalSlotsBoundWaiters(t *testing.T) {
	l := newLocalSlots(1)
	ep := Ref{Tenant: "acme", EndpointID: "ep1"}
	hold := l.acquire(context.Background(), ep, 0)
	if hold == nil {
		t.Fatal("the first holder did not get a slot")
	}
	got := make(chan func(), l.maxWaiters())
	for range l.maxWaiters() {
		go func() { got <- l.acquire(context.Background(), ep, time.Minute) }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		refs := l.m[localKey{"acme", "ep1"}].refs
		l.mu.Unlock()
		if refs == 1+l.maxWaiters() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d holders and waiters, want %d", refs, 1+l.maxWaiters())
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if r := l.acquire(context.Background(), ep, time.Minute); r != nil {
		t.Fatal("a delivery beyond the waiters' bound got a slot")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the delivery beyond the bound waited %v, want it turned away at once", d)
	}
	hold()
	for range l.maxWaiters() {
		r := <-got
		if r == nil {
			t.Fatal("a waiter gave up though slots were given back")
		}
		r()
	}
	if n := l.targets(); n != 0 {
		t.Fatalf("%d targets left in the map, want 0", n)
	}
}
