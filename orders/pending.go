package orders

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// LeaseScan reads the leases of up to limit of the tenant's in-flight
// orders, oldest first, in one read of the in-flight index and one
// pipeline of their status and lease, for the reconciler's lease check:
//
//   - expired: the orders whose lease ended before now, each with the end
//     of its lease in Unix milliseconds: a worker took them and neither
//     finished nor released them, most likely because it died. An order
//     whose lease was released (its handler ended, its task waits to
//     retry) is not among them.
//   - unleased: the orders created before pendingBefore that are still
//     pending and hold no lease: no worker has taken one (or it was given
//     back). The reconciler resumes those whose process task is held by a
//     worker that died before its lease script ran (decision 85).
func (s *Store) LeaseScan(ctx context.Context, tenant string, now, pendingBefore time.Time, limit int) (expired map[string]int64, unleased []string, err error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
		Key: s.k.active(tenant), Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10),
		ByScore: true, Count: int64(limit),
	}).Result()
	if err != nil || len(zs) == 0 {
		return nil, nil, err
	}
	cmds := make([]*redis.SliceCmd, len(zs))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HMGet(ctx, s.k.order(tenant, z.Member.(string)), "status", "lease")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read leases: %w", err)
	}
	expired = make(map[string]int64)
	for i, c := range cmds {
		id, v := zs[i].Member.(string), c.Val()
		if len(v) != 2 {
			continue
		}
		lease, _ := v[1].(string)
		if ms, err := strconv.ParseInt(lease, 10, 64); err == nil && ms < now.UnixMilli() {
			expired[id] = ms
		}
		if v[0] == string(Pending) && v[1] == nil && zs[i].Score <= float64(pendingBefore.UnixMilli()) {
			unleased = append(unleased, id)
		}
	}
	return expired, unleased, nil
}
