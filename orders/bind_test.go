package orders_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/asyncgate/asyncgate/orders"
)

func bindOrder(tenant string) *orders.Order {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &orders.Order{
		ID: uuid.Must(uuid.NewV7()).String(), Tenant: tenant, CreatedAt: now, Deadline: now.Add(15 * time.Minute),
		Request: orders.Request{AccountID: "acc-1", Symbol: "AAPL", Side: orders.Buy, Quantity: 10, Type: orders.Market},
	}
}

// TestCreateBound: the key goes from the caller's claim (or nothing) to its
// value with the order, in one script; a retried call answers as the first
// did (decision 16); a key that holds anything else, or a duplicate
// client_order_id, binds nothing.
func TestCreateBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	rdb := s.Client()
	const key = "ag:{acme}:idem:k1"
	b := orders.Binding{Key: key, Claim: "claim-1", Value: "bound-1", TTL: time.Hour}

	rdb.Set(ctx, key, "claim-1", time.Minute)
	o := bindOrder("acme")
	o.ClientOrderID = "coid-1"
	if _, bound, err := s.CreateBound(ctx, o, b); err != nil || !bound {
		t.Fatalf("create: bound %t, err %v", bound, err)
	}
	if v := rdb.Get(ctx, key).Val(); v != "bound-1" {
		t.Errorf("key holds %q, want the binding", v)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= time.Minute || ttl > time.Hour {
		t.Errorf("binding TTL %v, want the binding's hour", ttl)
	}
	// The same call again (its reply was lost): the same answer.
	if _, bound, err := s.CreateBound(ctx, o, b); err != nil || !bound {
		t.Errorf("retried create: bound %t, err %v", bound, err)
	}

	// A key another request took is left alone; the order is stored.
	rdb.Set(ctx, "ag:{acme}:idem:k2", "someone-else", time.Minute)
	o2 := bindOrder("acme")
	if _, bound, err := s.CreateBound(ctx, o2, orders.Binding{Key: "ag:{acme}:idem:k2", Claim: "claim-2", Value: "bound-2", TTL: time.Hour}); err != nil || bound {
		t.Errorf("create on a taken key: bound %t, err %v", bound, err)
	}
	if v := rdb.Get(ctx, "ag:{acme}:idem:k2").Val(); v != "someone-else" {
		t.Errorf("taken key holds %q", v)
	}
	if _, err := s.Get(ctx, "acme", o2.ID); err != nil {
		t.Errorf("order on a taken key: %v", err)
	}

	// A claim that expired: the key is bound all the same.
	o3 := bindOrder("acme")
	if _, bound, err := s.CreateBound(ctx, o3, orders.Binding{Key: "ag:{acme}:idem:k3", Claim: "claim-3", Value: "bound-3", TTL: time.Hour}); err != nil || !bound {
		t.Errorf("create on a free key: bound %t, err %v", bound, err)
	}

	// A duplicate client_order_id: no order, no binding.
	dup := bindOrder("acme")
	dup.ClientOrderID = "coid-1"
	rdb.Set(ctx, "ag:{acme}:idem:k4", "claim-4", time.Minute)
	existing, bound, err := s.CreateBound(ctx, dup, orders.Binding{Key: "ag:{acme}:idem:k4", Claim: "claim-4", Value: "bound-4", TTL: time.Hour})
	if !errors.Is(err, orders.ErrDuplicateClientOrderID) || bound || existing == nil || existing.ID != o.ID {
		t.Errorf("duplicate: bound %t, err %v", bound, err)
	}
	if v := rdb.Get(ctx, "ag:{acme}:idem:k4").Val(); v != "claim-4" {
		t.Errorf("key of a duplicate holds %q, want the claim", v)
	}
}
