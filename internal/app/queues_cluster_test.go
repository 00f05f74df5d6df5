package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// The queue dashboard (asynqmon) on a cluster client: its Redis page reads
// CLUSTER INFO and NODES and says where each queue's slot is, and its queue
// list reads the queues the app enqueued to.
func TestQueuesUIOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	rdb, err := NewClusterRedis(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	for _, q := range []string{"orders", "webhooks"} {
		if _, err := client.EnqueueContext(context.Background(), asynq.NewTask("t", nil), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	ui := queuesUI(rdb, true)
	get := func(path string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, httptest.NewRequest("GET", admin.QueuesRoot+path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, rec.Body)
		}
	}
	var info struct {
		Cluster         bool   `json:"cluster"`
		RawClusterNodes string `json:"raw_cluster_nodes"`
		QueueLocations  []struct {
			Queue   string   `json:"queue"`
			KeySlot int64    `json:"keyslot"`
			Nodes   []string `json:"nodes"`
		} `json:"queue_locations"`
	}
	get("/api/redis_info", &info)
	if !info.Cluster || strings.Count(info.RawClusterNodes, "master") != 3 || len(info.QueueLocations) != 2 {
		t.Errorf("redis_info: cluster %v, %d masters, %d queue locations; want true, 3, 2",
			info.Cluster, strings.Count(info.RawClusterNodes, "master"), len(info.QueueLocations))
	}
	for _, l := range info.QueueLocations {
		m, err := c.MasterOf("asynq:{" + l.Queue + "}:pending")
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Nodes) == 0 || l.Nodes[0] != m.Addr() {
			t.Errorf("queue %s (slot %d) on %v, MasterOf says %s", l.Queue, l.KeySlot, l.Nodes, m.Addr())
		}
	}
	var queues struct {
		Queues []struct {
			Queue   string `json:"queue"`
			Pending int    `json:"pending"`
		} `json:"queues"`
	}
	get("/api/queues", &queues)
	if len(queues.Queues) != 2 || queues.Queues[0].Pending+queues.Queues[1].Pending != 2 {
		t.Errorf("queues = %+v, want orders and webhooks with a pending task each", queues.Queues)
	}
}
