package webhooks_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

// A second rotation in quick succession keeps the first rotated-out secret
// signing to the end of its own grace period: each delivery is signed with
// every secret still in its overlap (before, the second rotation dropped the
// original secret at once, and receivers still on it rejected deliveries).
func TestSecondRotationKeepsEarlierOverlap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	ep, s0 := b.endpoint(t, "acme", rcv.URL+"/in")

	_, s1, err := b.store.RotateSecret(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	firstEnds := b.clock.now().Add(24 * time.Hour)
	b.clock.advance(time.Hour)
	rotated, s2, err := b.store.RotateSecret(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	secondEnds := b.clock.now().Add(24 * time.Hour)
	if rotated.PreviousSecretExpiresAt == nil || rotated.PreviousSecretExpiresAt.Sub(secondEnds).Abs() > time.Second {
		t.Errorf("previous_secret_expires_at = %v, want %v", rotated.PreviousSecretExpiresAt, secondEnds)
	}

	deliver := func() request {
		t.Helper()
		_, refs := b.publish(t, "acme", "")
		b.deliver(t, one(t, refs))
		return rcv.next(t)
	}
	check := func(when string, req request, valid, invalid []webhooks.Secret) {
		t.Helper()
		if n := len(strings.Fields(req.header.Get("webhook-signature"))); n != len(valid) {
			t.Errorf("%s: %d signatures, want %d", when, n, len(valid))
		}
		for i, s := range valid {
			if err := webhooks.VerifyAt(s, req.header, req.body, 0, b.clock.now()); err != nil {
				t.Errorf("%s: valid secret %d rejected: %v", when, i, err)
			}
		}
		for i, s := range invalid {
			if err := webhooks.VerifyAt(s, req.header, req.body, 0, b.clock.now()); !errors.Is(err, webhooks.ErrInvalidSignature) {
				t.Errorf("%s: expired secret %d: %v, want ErrInvalidSignature", when, i, err)
			}
		}
	}
	check("after two rotations", deliver(), []webhooks.Secret{s2, s1, s0}, nil)

	b.clock.advance(firstEnds.Sub(b.clock.now()) + time.Minute)
	check("after the first overlap", deliver(), []webhooks.Secret{s2, s1}, []webhooks.Secret{s0})
	b.clock.advance(secondEnds.Sub(b.clock.now()) + time.Minute)
	check("after both overlaps", deliver(), []webhooks.Secret{s2}, []webhooks.Secret{s0, s1})
	got, err := b.store.Endpoint(ctx, "acme", ep.ID)
	if err != nil || got.PreviousSecretExpiresAt != nil {
		t.Errorf("after both overlaps: previous_secret_expires_at %v (err %v), want none", got.PreviousSecretExpiresAt, err)
	}
}

// Rotations beyond the bound keep the newest rotated-out secrets.
func TestManyRotationsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	ep, _ := b.endpoint(t, "acme", rcv.URL+"/in")
	for range 20 {
		if _, _, err := b.store.RotateSecret(ctx, "acme", ep.ID); err != nil {
			t.Fatal(err)
		}
	}
	_, refs := b.publish(t, "acme", "")
	b.deliver(t, one(t, refs))
	req := rcv.next(t)
	if n := len(strings.Fields(req.header.Get("webhook-signature"))); n != 6 {
		t.Errorf("%d signatures after 20 rotations, want 6 (the current and 5 rotated-out secrets)", n)
	}
}
