package app

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/webhooks"
)

// TestQueueInspectorFailedDeliveries pages through a dead-letter queue of
// 1,100 delivery tasks (and a few of another type), whole and by tenant,
// across the inspector's pages and its scan bound.
func TestQueueInspectorFailedDeliveries(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	q := queueInspector{insp}
	ctx := context.Background()

	const n = 1100
	byTenant := map[string]int{}
	for i := range n {
		tenant := []string{"ta", "tb"}[i%2]
		if i == n/2 {
			tenant = "tc" // one among many
		}
		byTenant[tenant]++
		b, _ := json.Marshal(webhooks.Ref{Tenant: tenant, DeliveryID: fmt.Sprintf("dlv_%04d", i), EventID: "evt_x"})
		if _, err := client.Enqueue(asynq.NewTask(jobs.TypeWebhookDeliver, b), asynq.Queue(jobs.QueueWebhooks), asynq.TaskID(fmt.Sprintf("dlv_%04d", i)), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 { // not deliveries: left out
		if _, err := client.Enqueue(asynq.NewTask(jobs.TypeWebhookFanout, []byte(`{}`)), asynq.Queue(jobs.QueueWebhooks), asynq.ProcessIn(time.Hour), asynq.TaskID(fmt.Sprint("fan", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := insp.ArchiveAllScheduledTasks(jobs.QueueWebhooks); err != nil {
		t.Fatal(err)
	}

	// all pages through the tenant's failed deliveries, limit at a time.
	all := func(tenant string, limit int) (ids []string, calls int) {
		offset := 0
		for {
			calls++
			page, next, err := q.FailedDeliveries(ctx, tenant, offset, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit || next != 0 && next <= offset {
				t.Fatalf("page at %d: %d deliveries, next %d", offset, len(page), next)
			}
			for _, f := range page {
				if tenant != "" && f.Ref.Tenant != tenant {
					t.Fatalf("tenant %q: got %+v", tenant, f)
				}
				ids = append(ids, f.Ref.DeliveryID)
			}
			if next == 0 {
				return ids, calls
			}
			offset = next
		}
	}
	everything, calls := all("", 70)
	slices.Sort(everything)
	if len(everything) != n || len(slices.Compact(everything)) != n || calls < n/70 {
		t.Errorf("every tenant: %d deliveries (%d distinct) in %d calls, want %d", len(everything), len(slices.Compact(everything)), calls, n)
	}
	for tenant, want := range byTenant {
		got, _ := all(tenant, 40)
		if len(got) != want {
			t.Errorf("tenant %s: %d deliveries, want %d", tenant, len(got), want)
		}
	}
	// One call looks at 1,000 tasks at most: it stops there, with a cursor.
	page, next, err := q.FailedDeliveries(ctx, "tc", 0, 10)
	if err != nil || len(page) > 1 || next != 1000 {
		t.Errorf("tc's first page: %d deliveries, next %d, err %v", len(page), next, err)
	}

	stats, err := q.QueueStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var webhooksQ admin.QueueStats
	for _, s := range stats {
		names = append(names, s.Queue)
		if s.Queue == jobs.QueueWebhooks {
			webhooksQ = s
		}
	}
	if !slices.Equal(names, []string{jobs.QueueCritical, jobs.QueueOrders, jobs.QueueWebhooks}) || webhooksQ.Archived != n+5 || webhooksQ.Size != n+5 {
		t.Errorf("queues %v; webhooks %+v", names, webhooksQ)
	}
}
