package app_test

import (
	"net/http"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/app"
)

// TestDuplicatePlacementLeavesNoTask: the API writes an order's task in
// the pipeline of its create (decision 88), so a create that stores
// nothing (a duplicate client_order_id) has written a task too; the API
// withdraws it before answering. With no worker to take them, Asynq holds
// exactly the first order's task, pending.
func TestDuplicatePlacementLeavesNoTask(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Worker = false })
	first := b.place(t, order(func(o map[string]any) { o["client_order_id"] = "dup-1" }))
	for range 3 {
		r := b.do(t, "POST", "/v1/orders", apiKey, order(func(o map[string]any) { o["client_order_id"] = "dup-1" }))
		if r.status != http.StatusConflict || r.header.Get("Location") != "/v1/orders/"+first.ID {
			t.Fatalf("duplicate: %d %s (Location %q)", r.status, r.body, r.header.Get("Location"))
		}
	}
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	queues, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, q := range queues {
		tasks, err := insp.ListPendingTasks(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			ids = append(ids, task.ID)
		}
	}
	if len(ids) != 1 || ids[0] != first.ID {
		t.Fatalf("pending tasks %v, want only the first order's %s", ids, first.ID)
	}
}
