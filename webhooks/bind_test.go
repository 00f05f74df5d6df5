package webhooks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

// TestCreateEndpointBound: the key goes from the caller's claim (or
// nothing) to the value bind made of the new endpoint and its secret, with
// the endpoint; a key that holds anything else is left alone; a tenant at
// its cap binds nothing.
func TestCreateEndpointBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, func(o *options) { o.store.MaxEndpoints = 2 })
	in := webhooks.EndpointInput{URL: "http://127.0.0.1:9/in"}
	bindAs := func(key, claim string) func(*webhooks.Endpoint, webhooks.Secret) webhooks.Binding {
		return func(ep *webhooks.Endpoint, s webhooks.Secret) webhooks.Binding {
			return webhooks.Binding{Key: key, Claim: claim, Value: ep.ID + " " + s.String(), TTL: time.Hour}
		}
	}

	b.rdb.Set(ctx, "ag:{acme}:idem:k1", "claim-1", time.Minute)
	ep, secret, bound, err := b.store.CreateEndpointBound(ctx, "acme", in, bindAs("ag:{acme}:idem:k1", "claim-1"))
	if err != nil || !bound {
		t.Fatalf("create: bound %t, err %v", bound, err)
	}
	if v := b.rdb.Get(ctx, "ag:{acme}:idem:k1").Val(); v != ep.ID+" "+secret.String() {
		t.Errorf("key holds %q, want the endpoint's binding", v)
	}
	if ttl := b.rdb.PTTL(ctx, "ag:{acme}:idem:k1").Val(); ttl <= time.Minute {
		t.Errorf("binding TTL %v, want the binding's hour", ttl)
	}

	b.rdb.Set(ctx, "ag:{acme}:idem:k2", "someone-else", time.Minute)
	if _, _, bound, err := b.store.CreateEndpointBound(ctx, "acme", in, bindAs("ag:{acme}:idem:k2", "claim-2")); err != nil || bound {
		t.Errorf("create on a taken key: bound %t, err %v", bound, err)
	}
	if v := b.rdb.Get(ctx, "ag:{acme}:idem:k2").Val(); v != "someone-else" {
		t.Errorf("taken key holds %q", v)
	}

	b.rdb.Set(ctx, "ag:{acme}:idem:k3", "claim-3", time.Minute)
	if _, _, bound, err := b.store.CreateEndpointBound(ctx, "acme", in, bindAs("ag:{acme}:idem:k3", "claim-3")); !errors.Is(err, webhooks.ErrTooManyEndpoints) || bound {
		t.Errorf("create over the cap: bound %t, err %v", bound, err)
	}
	if v := b.rdb.Get(ctx, "ag:{acme}:idem:k3").Val(); v != "claim-3" {
		t.Errorf("key of a refused create holds %q, want the claim", v)
	}
}
