package orders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// PendingUnleased returns up to limit of the tenant's in-flight orders
// created before createdBefore that are still pending and hold no lease:
// no worker has taken one (or it was given back). The reconciler resumes
// those whose process task is held by a worker that died before its lease
// script ran (decision 85). One read of the in-flight index and one
// pipeline of the candidates' status and lease.
func (s *Store) PendingUnleased(ctx context.Context, tenant string, createdBefore time.Time, limit int) ([]string, error) {
	ids, err := s.InFlight(ctx, tenant, createdBefore, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.k.order(tenant, id), "status", "lease")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read pending orders: %w", err)
	}
	var out []string
	for i, c := range cmds {
		v := c.Val()
		if len(v) == 2 && v[0] == string(Pending) && v[1] == nil {
			out = append(out, ids[i])
		}
	}
	return out, nil
}
