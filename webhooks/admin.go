package webhooks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Queries of the operators' dashboard: read-only, across tenants.

// Endpoint health, as the dashboard shows it.
const (
	// HealthHealthy: the last attempt succeeded, or none failed yet.
	HealthHealthy = "healthy"
	// HealthFailing: attempts fail, the breaker is not open (yet, or any more).
	HealthFailing = "failing"
	// HealthOpen: the breaker is open: no attempt until OpenUntil.
	HealthOpen = "open"
	// HealthDisabled: disabled, by its owner or by asyncgate (see DisabledReason).
	HealthDisabled = "disabled"
)

// EndpointHealths lists every health an endpoint can have.
var EndpointHealths = []string{HealthHealthy, HealthFailing, HealthOpen, HealthDisabled}

// EndpointState is an endpoint with its tenant and its breaker's state.
type EndpointState struct {
	Tenant   string
	Endpoint *Endpoint
	// Health is one of EndpointHealths.
	Health string
	// FailureStreak is how many attempts in a row failed.
	FailureStreak int
	// OpenUntil is set while the breaker is open.
	OpenUntil *time.Time
}

// EndpointStates returns the endpoints of the tenants, tenant by tenant in
// the given order, each tenant's oldest first, with their health. It reads
// them in two pipelines, whatever the number of tenants.
func (s *Store) EndpointStates(ctx context.Context, tenants []string) ([]*EndpointState, error) {
	idCmds := make([]*redis.StringSliceCmd, len(tenants))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range tenants {
			idCmds[i] = p.ZRange(ctx, s.k.endpoints(t), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	type ref struct{ tenant, id string }
	var refs []ref
	for i, c := range idCmds {
		for _, id := range c.Val() {
			refs = append(refs, ref{tenants[i], id})
		}
	}
	out := []*EndpointState{}
	if len(refs) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(refs))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.HGetAll(ctx, s.k.endpoint(r.tenant, r.id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	now := s.cfg.Now()
	for i, c := range cmds {
		h := c.Val()
		rec, err := decodeEndpoint(h, now)
		if errors.Is(err, ErrEndpointNotFound) {
			continue // deleted between the two reads
		}
		if err != nil {
			return nil, err
		}
		st := &EndpointState{Tenant: refs[i].tenant, Endpoint: &rec.Endpoint, Health: HealthHealthy}
		st.FailureStreak, _ = strconv.Atoi(h["streak"])
		if u := msTime(h["open_until"]); u.After(now) {
			st.OpenUntil = &u
		}
		switch {
		case rec.Status == EndpointDisabled:
			st.Health = HealthDisabled
		case st.OpenUntil != nil:
			st.Health = HealthOpen
		case st.FailureStreak > 0 || rec.FailingSince != nil:
			st.Health = HealthFailing
		}
		out = append(out, st)
	}
	return out, nil
}

// EventDeliveries returns the deliveries of the tenant's event, in the
// order they were made, with their attempt logs; none (not an error) when
// the event was never published or has expired.
func (s *Store) EventDeliveries(ctx context.Context, tenant, eventID string) ([]*Delivery, error) {
	ids, err := s.rdb.HGet(ctx, s.k.event(tenant, eventID), "deliveries").Result()
	if errors.Is(err, redis.Nil) || err == nil && ids == "" {
		return []*Delivery{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read event deliveries: %w", err)
	}
	ds, err := s.readDeliveries(ctx, tenant, strings.Split(ids, ","))
	if err != nil {
		return nil, err
	}
	out := make([]*Delivery, 0, len(ds))
	for _, d := range ds {
		if d != nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// DeliveriesOf reads deliveries of any tenants, with their attempt logs, in
// one pipeline: out[i] is refs[i]'s delivery, nil when it expired.
func (s *Store) DeliveriesOf(ctx context.Context, refs []Ref) ([]*Delivery, error) {
	out := make([]*Delivery, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	hs := make([]*redis.MapStringStringCmd, len(refs))
	logs := make([]*redis.StringSliceCmd, len(refs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			hs[i] = p.HGetAll(ctx, s.k.delivery(r.Tenant, r.DeliveryID))
			logs[i] = p.LRange(ctx, s.k.attempts(r.Tenant, r.DeliveryID), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	for i := range refs {
		out[i] = decodeDelivery(hs[i].Val(), logs[i].Val())
	}
	return out, nil
}
