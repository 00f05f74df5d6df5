package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/webhooks"
)

// queueInspector is the dashboard's view of the Asynq queues
// (admin.QueueInspector), through asynq's Inspector on the shared Redis.
type queueInspector struct{ insp *asynq.Inspector }

// The queues the dashboard always shows, even before their first task:
// one line per kind, the sum of its shards (decision 75).
var knownQueues = []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks}

func (q queueInspector) QueueStats(ctx context.Context) ([]admin.QueueStats, error) {
	infos, err := queueInfos(q.insp, knownQueues)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(infos))
	out := make([]admin.QueueStats, 0, len(names))
	for _, n := range names {
		info := infos[n]
		if info == nil { // no task yet
			out = append(out, admin.QueueStats{Queue: n})
			continue
		}
		out = append(out, admin.QueueStats{
			Queue: n, Size: info.Size, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
			Retry: info.Retry, Archived: info.Archived, LatencyMS: float64(info.Latency.Microseconds()) / 1000,
			Paused: info.Paused, ProcessedToday: info.Processed, FailedToday: info.Failed,
		})
	}
	return out, nil
}

// queueInfos reads the figures of every Asynq queue there is, the shards
// of a kind summed up under the kind's name (see addInfo), and gives the
// queues of want that do not exist yet (a queue exists from its first
// task on) a nil entry: GetQueueInfo fails on those, with an error that is
// not asynq.ErrQueueNotFound, so the queues are listed first.
func queueInfos(insp *asynq.Inspector, want []string) (map[string]*asynq.QueueInfo, error) {
	names, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	infos := make(map[string]*asynq.QueueInfo, len(names)+len(want))
	for _, n := range want {
		infos[n] = nil
	}
	for _, n := range names {
		info, err := insp.GetQueueInfo(n)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", n, err)
		}
		name := n
		if kind, _, ok := jobs.ParseShardQueue(n); ok {
			name = kind
		}
		infos[name] = addInfo(infos[name], info)
	}
	return infos, nil
}

// addInfo adds the figures of one shard to its kind's: counts add up, the
// latency is the largest (the oldest pending task of any shard), and the
// kind is paused when any shard is (tasks wait in it).
func addInfo(sum, shard *asynq.QueueInfo) *asynq.QueueInfo {
	if sum == nil {
		c := *shard
		return &c
	}
	sum.Size += shard.Size
	sum.Groups += shard.Groups
	sum.Pending += shard.Pending
	sum.Active += shard.Active
	sum.Scheduled += shard.Scheduled
	sum.Retry += shard.Retry
	sum.Archived += shard.Archived
	sum.Completed += shard.Completed
	sum.Aggregating += shard.Aggregating
	sum.Processed += shard.Processed
	sum.Failed += shard.Failed
	sum.ProcessedTotal += shard.ProcessedTotal
	sum.FailedTotal += shard.FailedTotal
	sum.MemoryUsage += shard.MemoryUsage
	sum.Latency = max(sum.Latency, shard.Latency)
	sum.Paused = sum.Paused || shard.Paused
	return sum
}

// webhookShards lists the webhooks queues there are, in shard order.
func webhookShards(insp *asynq.Inspector) ([]string, error) {
	names, err := insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	var idx []int
	for _, n := range names {
		if kind, i, ok := jobs.ParseShardQueue(n); ok && kind == jobs.QueueWebhooks {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = jobs.ShardQueue(jobs.QueueWebhooks, i)
	}
	return out, nil
}

// Failed deliveries are read from the archive of the webhooks queues, and
// retrying ones from their retry sets, shard after shard, in pages of
// archivePage; one call looks at archiveScan tasks at most. A position is
// shardStride times the index of the shard in the list of webhooks
// queues, plus the position within that shard's list.
const (
	archivePage = 100
	archiveScan = 1000
	shardStride = 1 << 24
)

func (q queueInspector) FailedDeliveries(ctx context.Context, tenant string, offset, limit int) ([]admin.FailedDelivery, int, error) {
	return q.deliveries(ctx, q.insp.ListArchivedTasks, tenant, offset, limit, func(r webhooks.Ref, t *asynq.TaskInfo) admin.FailedDelivery {
		return admin.FailedDelivery{Ref: r, FailedAt: t.LastFailedAt, LastError: t.LastErr}
	})
}

func (q queueInspector) RetryingDeliveries(ctx context.Context, tenant string, offset, limit int) ([]admin.FailedDelivery, int, error) {
	return q.deliveries(ctx, q.insp.ListRetryTasks, tenant, offset, limit, func(r webhooks.Ref, t *asynq.TaskInfo) admin.FailedDelivery {
		return admin.FailedDelivery{Ref: r, NextAttemptAt: t.NextProcessAt, LastError: t.LastErr}
	})
}

// deliveries pages through the delivery tasks that list returns (the
// webhooks queues' archives or retry sets), of the tenant ("" for all).
func (q queueInspector) deliveries(ctx context.Context, list func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error),
	tenant string, offset, limit int, of func(webhooks.Ref, *asynq.TaskInfo) admin.FailedDelivery) ([]admin.FailedDelivery, int, error) {
	shards, err := webhookShards(q.insp)
	if err != nil {
		return nil, 0, err
	}
	var out []admin.FailedDelivery
	shard, pos := offset/shardStride, offset%shardStride
	for scanned := 0; scanned < archiveScan && shard < len(shards); {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		page := pos / archivePage
		tasks, err := list(shards[shard], asynq.Page(page+1), asynq.PageSize(archivePage))
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, 0, fmt.Errorf("list delivery tasks: %w", err)
		}
		skip := pos - page*archivePage
		if skip >= len(tasks) {
			shard, pos = shard+1, 0 // the end of this shard
			continue
		}
		for _, t := range tasks[skip:] {
			pos++
			scanned++
			if t.Type != jobs.TypeWebhookDeliver {
				continue
			}
			var r webhooks.Ref
			if json.Unmarshal(t.Payload, &r) != nil || r.Tenant == "" || r.DeliveryID == "" {
				continue
			}
			if tenant != "" && r.Tenant != tenant {
				continue
			}
			out = append(out, of(r, t))
			if len(out) == limit {
				return out, shard*shardStride + pos, nil
			}
		}
		if len(tasks) < archivePage {
			shard, pos = shard+1, 0
		}
	}
	if shard >= len(shards) {
		return out, 0, nil
	}
	return out, shard*shardStride + pos, nil
}
