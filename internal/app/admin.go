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

// The queues the dashboard always shows, even before their first task.
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

// queueInfos reads the figures of every Asynq queue there is, and gives
// the queues of want that do not exist yet (a queue exists from its first
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
		infos[n] = info
	}
	return infos, nil
}

// Failed deliveries are read from the archive of the webhooks queue, and
// retrying ones from its retry set, in pages of archivePage; one call
// looks at archiveScan tasks at most.
const (
	archivePage = 100
	archiveScan = 1000
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
// webhooks queue's archive or retry set), of the tenant ("" for all).
func (q queueInspector) deliveries(ctx context.Context, list func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error),
	tenant string, offset, limit int, of func(webhooks.Ref, *asynq.TaskInfo) admin.FailedDelivery) ([]admin.FailedDelivery, int, error) {
	var out []admin.FailedDelivery
	pos := offset
	for scanned := 0; scanned < archiveScan; {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		page := pos / archivePage
		tasks, err := list(jobs.QueueWebhooks, asynq.Page(page+1), asynq.PageSize(archivePage))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("list delivery tasks: %w", err)
		}
		skip := pos - page*archivePage
		if skip >= len(tasks) {
			return out, 0, nil // the end
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
				return out, pos, nil
			}
		}
		if len(tasks) < archivePage {
			return out, 0, nil
		}
	}
	return out, pos, nil
}
