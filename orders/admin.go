package orders

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Queries of the operators' dashboard: across tenants, read-only. The
// tenants are those of ag:tenants (every tenant that has placed an order).

// ListAll returns the orders of every tenant, newest first, and the cursor
// of the next page ("" at the end). Order ids are UUIDv7, so one cursor (the
// last id) pages through all tenants at once: each page reads at most
// p.Limit+1 ids per tenant (one pipeline), merges them, and then the
// orders it keeps (another). Its cost grows with the number of tenants,
// not of orders; with thousands of tenants, list one tenant's (List).
func (s *Store) ListAll(ctx context.Context, p ListParams) ([]*Order, string, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list orders: %w", err)
	}
	upper := "+"
	if p.After != "" {
		upper = "(" + p.After
	}
	cmds := make([]*redis.StringSliceCmd, len(tenants))
	_, err = s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, t := range tenants {
			key := s.k.index(t)
			if p.Status != "" {
				key = s.k.statusIndex(t, p.Status)
			}
			cmds[i] = pl.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: upper, Stop: "-", ByLex: true, Rev: true, Count: int64(p.Limit + 1)})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list orders: %w", err)
	}
	var refs []orderRef
	for i, c := range cmds {
		for _, id := range c.Val() {
			refs = append(refs, orderRef{tenants[i], id})
		}
	}
	slices.SortFunc(refs, func(a, b orderRef) int {
		if c := strings.Compare(b.id, a.id); c != 0 {
			return c
		}
		return strings.Compare(a.tenant, b.tenant)
	})
	next := ""
	if len(refs) > p.Limit {
		refs = refs[:p.Limit]
		next = refs[len(refs)-1].id
	}
	out, err := s.readOrders(ctx, refs, p.Status)
	if err != nil {
		return nil, "", fmt.Errorf("list orders: %w", err)
	}
	return out, next, nil
}

// Find returns the order id of whichever tenants have one (normally one),
// in tenant order; none is not an error.
func (s *Store) Find(ctx context.Context, id string) ([]*Order, error) {
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("find order: %w", err)
	}
	slices.Sort(tenants)
	refs := make([]orderRef, len(tenants))
	for i, t := range tenants {
		refs[i] = orderRef{t, id}
	}
	out, err := s.readOrders(ctx, refs, "")
	if err != nil {
		return nil, fmt.Errorf("find order: %w", err)
	}
	return out, nil
}

// IDLowerBound is the smallest order id (a UUIDv7) that can be made at t
// or later: ids compare as text in time order.
func IDLowerBound(t time.Time) string {
	ms := uint64(t.UnixMilli())
	return fmt.Sprintf("%08x-%04x", ms>>16, ms&0xffff)
}

// CountCreatedSince counts, per current status, the orders of every tenant
// created at since or later. It costs one ZLEXCOUNT (O(log n)) per tenant
// and status, in one pipeline: the status indexes are ordered by id, and ids
// by creation time.
func (s *Store) CountCreatedSince(ctx context.Context, since time.Time) (map[Status]int64, error) {
	tenants, err := s.Tenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("count orders: %w", err)
	}
	lower := "[" + IDLowerBound(since)
	cmds := make([]*redis.IntCmd, 0, len(tenants)*len(Statuses))
	_, err = s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, t := range tenants {
			for _, st := range Statuses {
				cmds = append(cmds, pl.ZLexCount(ctx, s.k.statusIndex(t, st), lower, "+"))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count orders: %w", err)
	}
	out := make(map[Status]int64, len(Statuses))
	for _, st := range Statuses {
		out[st] = 0
	}
	for i, c := range cmds {
		out[Statuses[i%len(Statuses)]] += c.Val()
	}
	return out, nil
}
