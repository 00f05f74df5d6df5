package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
)

// An order end to end on a Redis Cluster (three masters, a replica each):
// `asyncgate api` and `asyncgate worker` processes that know the cluster only
// by --redis-cluster run under --durability strict with --redis-min-replicas 1
// (the barrier waits for a replica on every master). The order is accepted
// and executed once; 'asyncgate keys create' with ASYNCGATE_REDIS_CLUSTER makes
// a key the API takes. Then the master serving the tenant's slot is killed
// (-9): once its replica has taken over and the old master is back as a
// replica, the same processes accept and run the next order, and the first
// is intact.
func TestClusterProcesses(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	strict := []string{"--redis-cluster", c.URL(), "--durability", "strict", "--redis-min-replicas", "1"}

	api, worker, apiURL := startAPIAndWorker(t, key, simSrv.URL, strict)
	if !strings.Contains(api.Output(), `"durability_method":"WAIT replicas"`) {
		t.Errorf("the API does not wait for replicas:\n%s", api.Output())
	}

	id, code := place(t, apiURL)
	if code != http.StatusAccepted {
		t.Fatalf("place: %d\n%s", code, api.Output())
	}
	if o := waitTerminal(t, apiURL, id, time.Now().Add(60*time.Second)); o.Status != orders.Executed {
		t.Fatalf("order %s ended %s (%s)\n%s", id, o.Status, o.Reason, worker.Output())
	}
	if n := s.Executions(id); n != 1 {
		t.Errorf("order %s executed %d times", id, n)
	}
	home, err := c.MasterOf("ag:{acme}:idx")
	if err != nil {
		t.Fatal(err)
	}
	per, err := c.CountKeys(context.Background(), "ag:{acme}:*")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("acme's keys per master: %v (its slot on %s)", per, home.Addr())
	if per[home.Addr()] == 0 {
		t.Errorf("the master of acme's slot %s holds none of its keys", home.Addr())
	}

	placeWithNewKey(t, apiURL, "on ASYNCGATE_REDIS_CLUSTER", nil, env(map[string]string{"ASYNCGATE_REDIS_CLUSTER": c.URL()}))

	home.Kill()
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := home.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	var id2 string
	for {
		if id2, code = place(t, apiURL); code == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no order accepted within 90s of the master's death (last %d)\n%s", code, api.Output())
		}
		time.Sleep(200 * time.Millisecond) // poll with a deadline: the failover has no event here
	}
	if now, err := c.MasterOf("ag:{acme}:idx"); err != nil || now == home {
		t.Errorf("after the failover acme's slot is on %v (%v), want the old master's replica", now, err)
	}
	if o := waitTerminal(t, apiURL, id, time.Now().Add(30*time.Second)); o.Status != orders.Executed {
		t.Errorf("after the failover, the first order is %s", o.Status)
	}
	if o := waitTerminal(t, apiURL, id2, time.Now().Add(90*time.Second)); o.Status != orders.Executed {
		t.Errorf("order %s placed after the failover ended %s (%s)\n%s", id2, o.Status, o.Reason, worker.Output())
	}
	if n := s.Executions(id2); n != 1 {
		t.Errorf("order %s executed %d times", id2, n)
	}
}

// No password of a --redis, --redis-sentinel or --redis-cluster URL reaches an error.
func TestRedactRedisURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://user:s3cret@127.0.0.1:6379/0",
		"redis://127.0.0.1:26379/0?master_name=m&password=s3cret&addr=127.0.0.1:26380",
		"redis://:s3cret@127.0.0.1:7000?addr=127.0.0.1:7001",
	} {
		if got := redactURL(u); strings.Contains(got, "s3cret") || !strings.Contains(got, "127.0.0.1") {
			t.Errorf("redactURL(%s) = %s", u, got)
		}
	}
}
