package webhooks

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// ErrRecoveryNotFound: no such recovery for this tenant (or it expired).
var ErrRecoveryNotFound = errors.New("webhook recovery not found")

// Recovery statuses.
const (
	RecoveryPending = "pending" // waiting for its task
	RecoveryRunning = "running"
	RecoveryDone    = "done"   // every failed delivery found was redelivered (or had expired)
	RecoveryFailed  = "failed" // stopped: see Error
)

// Recovery is a tracked job that redelivers an endpoint's failed
// deliveries made since a time, oldest first.
type Recovery struct {
	ID         string    `json:"id"`
	EndpointID string    `json:"endpoint_id"`
	Since      time.Time `json:"since"`
	Status     string    `json:"status"`
	// Total is the failed deliveries found; Redelivered and Skipped (expired
	// meanwhile) count those handled so far.
	Total       int       `json:"total"`
	Redelivered int       `json:"redelivered"`
	Skipped     int       `json:"skipped"`
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

var recoveryIDRe = regexp.MustCompile(`^rcv_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidRecoveryID reports whether id has the shape of a recovery id.
func ValidRecoveryID(id string) bool { return recoveryIDRe.MatchString(id) }

var createRecoveryScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'ep', ARGV[2], 'since', ARGV[3], 'status', 'pending',
  'total', 0, 'redelivered', 0, 'skipped', 0, 'created', ARGV[4], 'updated', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// CreateRecovery records a pending recovery of the endpoint's failed
// deliveries since since; its task (jobs) carries it out.
// ErrEndpointNotFound.
func (s *Store) CreateRecovery(ctx context.Context, tenant, endpointID string, since time.Time) (*Recovery, error) {
	if !ValidEndpointID(endpointID) {
		return nil, ErrEndpointNotFound
	}
	id := "rcv_" + uuid.Must(uuid.NewV7()).String()
	now := s.cfg.Now()
	n, err := createRecoveryScript.Run(ctx, s.rdb, []string{s.k.recovery(tenant, id), s.k.endpoint(tenant, endpointID)},
		id, endpointID, since.UnixMilli(), now.UnixMilli(), s.cfg.Retention.Milliseconds()).Int()
	if err != nil {
		return nil, fmt.Errorf("create recovery: %w", err)
	}
	if n == 0 {
		return nil, ErrEndpointNotFound
	}
	return s.Recovery(ctx, tenant, id)
}

// Recovery returns the tenant's recovery, or ErrRecoveryNotFound.
func (s *Store) Recovery(ctx context.Context, tenant, id string) (*Recovery, error) {
	if !ValidRecoveryID(id) {
		return nil, ErrRecoveryNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.k.recovery(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read recovery: %w", err)
	}
	if h["id"] == "" {
		return nil, ErrRecoveryNotFound
	}
	r := &Recovery{ID: h["id"], EndpointID: h["ep"], Since: msTime(h["since"]), Status: h["status"], Error: h["error"],
		CreatedAt: msTime(h["created"]), UpdatedAt: msTime(h["updated"])}
	r.Total, _ = strconv.Atoi(h["total"])
	r.Redelivered, _ = strconv.Atoi(h["redelivered"])
	r.Skipped, _ = strconv.Atoi(h["skipped"])
	return r, nil
}

// RecoveryProgress sets the recovery's status (and error, if any) and adds
// to its counts.
func (s *Store) RecoveryProgress(ctx context.Context, tenant, id, status, errText string, total, redelivered, skipped int) error {
	key := s.k.recovery(tenant, id)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "status", status, "updated", s.cfg.Now().UnixMilli())
		if errText != "" {
			p.HSet(ctx, key, "error", errText)
		}
		if total > 0 {
			p.HSet(ctx, key, "total", total)
		}
		p.HIncrBy(ctx, key, "redelivered", int64(redelivered))
		p.HIncrBy(ctx, key, "skipped", int64(skipped))
		return nil
	})
	if err != nil {
		return fmt.Errorf("recovery progress: %w", err)
	}
	return nil
}

// DeliveriesSince returns the endpoint's deliveries created at since or
// later, oldest first (at most limit).
func (s *Store) DeliveriesSince(ctx context.Context, tenant, endpointID string, since time.Time, limit int) ([]*Delivery, error) {
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k.endpointDeliveries(tenant, endpointID),
		Start: "[" + idCutoff("dlv_", since), Stop: "+", ByLex: true, Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	ds, err := s.readDeliveries(ctx, tenant, ids)
	if err != nil {
		return nil, err
	}
	out := ds[:0]
	for _, d := range ds {
		if d != nil {
			out = append(out, d)
		}
	}
	return out, nil
}
