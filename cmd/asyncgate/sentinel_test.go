package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/orders"
)

// Exactly one Redis: --redis, --redis-sentinel or --redis-cluster, never two,
// never none; a Sentinel URL names its master; a cluster URL is go-redis's.
func TestRedisChoiceFailsClearly(t *testing.T) {
	t.Parallel()
	worker := []string{"--portfolio-url", "http://p", "--execution-url", "http://e"}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"none", append([]string{"asyncgate", "worker"}, worker...), nil, "one Redis is required: --redis (ASYNCGATE_REDIS), --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) or --redis-cluster (ASYNCGATE_REDIS_CLUSTER), such as --redis redis://localhost:6379/0"},
		{"none for keys", []string{"asyncgate", "keys", "list"}, nil, "one Redis is required: --redis (ASYNCGATE_REDIS), --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) or --redis-cluster"},
		{"both flags", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--redis-sentinel", "redis://127.0.0.1:2?master_name=m"}, nil, "give exactly one of --redis (ASYNCGATE_REDIS), --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) or --redis-cluster (ASYNCGATE_REDIS_CLUSTER), not --redis (ASYNCGATE_REDIS) and --redis-sentinel (ASYNCGATE_REDIS_SENTINEL)"},
		{"both by env", []string{"asyncgate", "serve"}, map[string]string{"ASYNCGATE_REDIS": "redis://127.0.0.1:1", "ASYNCGATE_REDIS_SENTINEL": "redis://127.0.0.1:2?master_name=m"}, "give exactly one of --redis"},
		{"redis and cluster", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1"}, map[string]string{"ASYNCGATE_REDIS_CLUSTER": "redis://127.0.0.1:7000?addr=127.0.0.1:7001"}, "not --redis (ASYNCGATE_REDIS) and --redis-cluster (ASYNCGATE_REDIS_CLUSTER)"},
		{"sentinel and cluster", []string{"asyncgate", "keys", "list", "--redis-sentinel", "redis://127.0.0.1:2?master_name=m", "--redis-cluster", "redis://127.0.0.1:7000"}, nil, "not --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) and --redis-cluster (ASYNCGATE_REDIS_CLUSTER)"},
		{"all three", []string{"asyncgate", "worker", "--redis", "redis://127.0.0.1:1", "--redis-sentinel", "redis://127.0.0.1:2?master_name=m", "--redis-cluster", "redis://127.0.0.1:7000"}, nil, "not --redis (ASYNCGATE_REDIS) and --redis-sentinel (ASYNCGATE_REDIS_SENTINEL) and --redis-cluster"},
		{"bad cluster url", append([]string{"asyncgate", "worker", "--redis-cluster", "redis://127.0.0.1:7000?addr=127.0.0.1:7001&master_name=m"}, worker...), nil, "redis cluster url: redis: unexpected option: master_name"},
		{"cluster url scheme", append([]string{"asyncgate", "worker", "--redis-cluster", "http://127.0.0.1:7000"}, worker...), nil, "redis cluster url: redis: invalid URL scheme: http"},
		{"cluster database", []string{"asyncgate", "keys", "list", "--redis-cluster", "redis://127.0.0.1:7000/3?addr=127.0.0.1:7001"}, nil, "a Redis Cluster has only database 0, not 3"},
		{"no master name", append([]string{"asyncgate", "worker", "--redis-sentinel", "redis://127.0.0.1:26379/0"}, worker...), nil, "master_name is missing"},
		{"bad sentinel url", append([]string{"asyncgate", "worker", "--redis-sentinel", "redis://127.0.0.1:26379/0?master=m"}, worker...), nil, "redis sentinel url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

var startedAddr = regexp.MustCompile(`"msg":"asyncgate started".*"addr":"(http://[^"]+)"`)

// startAPIAndWorker starts an `asyncgate api` (tenant acme with key) and an
// `asyncgate worker` calling simURL, both with redisFlags, and waits for
// the API's address in its log.
// placeWithNewKey creates a key of tenant beta with 'asyncgate keys
// create' (its Redis given by flags or getenv) and places an order with
// it: the API must answer 202.
func placeWithNewKey(t *testing.T, apiURL, how string, flags []string, getenv func(string) string) {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), append([]string{"asyncgate", "keys", "create", "--tenant", "beta"}, flags...), &out, getenv); err != nil {
		t.Fatalf("keys create: %v", err)
	}
	secret := regexp.MustCompile(`ag_live_\S+`).FindString(out.String())
	req, _ := http.NewRequest("POST", apiURL+"/v1/orders", strings.NewReader(`{"account_id":"acc-2","symbol":"AAPL","side":"buy","quantity":1,"type":"market"}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if secret == "" || res.StatusCode != http.StatusAccepted {
		t.Errorf("an order with the key from 'keys create' %s (%q): %d, want 202", how, out.String(), res.StatusCode)
	}
}

func startAPIAndWorker(t *testing.T, key, simURL string, redisFlags []string) (api, worker *proctest.Proc, apiURL string) {
	t.Helper()
	api = proctest.Start(t, binary, append([]string{"api", "--addr", "127.0.0.1:0", "--api-keys", key + "=acme",
		"--rate-limit", "off", "--log-level", "info"}, redisFlags...)...)
	worker = proctest.Start(t, binary, append([]string{"worker", "--portfolio-url", simURL, "--execution-url", simURL,
		"--log-level", "warn", "--reconcile-interval", "1s"}, redisFlags...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := startedAddr.FindStringSubmatch(api.Output()); m != nil {
			return api, worker, m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API did not start within 30s:\n%s", api.Output())
		}
		time.Sleep(50 * time.Millisecond) // poll with a deadline: the log line is the only event
	}
}

// An order end to end through a Sentinel-managed master (two replicas,
// three sentinels): an API process and a worker process find Redis only
// through --redis-sentinel, under
// --durability strict waiting for the master's replica (WAIT through the
// failover client); the order is accepted, executed once, and its data is
// on the master the sentinel names. Then the master is killed: after the
// sentinel's failover the same processes take and run orders again.
func TestSentinelEndToEnd(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, redistest.Options{})
	replica := redistest.StartReplica(t, master, redistest.Options{})
	replica2 := redistest.StartReplica(t, master, redistest.Options{})
	// Three sentinels, a quorum of two: the failover needs a majority.
	var sentinels []*redistest.Sentinel
	for range 3 {
		sentinels = append(sentinels, redistest.StartSentinel(t, master, "orders-master", 2))
	}
	sentinelURL := "redis://" + sentinels[0].Addr() + "/0?master_name=orders-master&addr=" + sentinels[1].Addr() + "&addr=" + sentinels[2].Addr()
	s := sim.New(sim.Config{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	strict := []string{"--redis-sentinel", sentinelURL, "--durability", "strict", "--redis-min-replicas", "1"}

	api, _, apiURL := startAPIAndWorker(t, key, simSrv.URL, strict)
	if !strings.Contains(api.Output(), `"durability":"strict"`) {
		t.Errorf("the API does not run strict durability:\n%s", api.Output())
	}

	id, code := place(t, apiURL)
	if code != http.StatusAccepted {
		t.Fatalf("place: %d\n%s", code, api.Output())
	}
	o := waitTerminal(t, apiURL, id, time.Now().Add(60*time.Second))
	if o.Status != orders.Executed {
		t.Fatalf("order %s ended %s (%s)", id, o.Status, o.Reason)
	}
	if n := s.Executions(id); n != 1 {
		t.Errorf("order %s executed %d times", id, n)
	}
	// The writes went to the master the sentinel names, and (WAIT 1 before
	// the 202) to at least one replica; the other may still lag.
	keysOn := func(srv *redistest.Server) int64 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer c.Close()
		n, err := c.DBSize(context.Background()).Result()
		if err != nil {
			t.Errorf("DBSIZE on %s: %v", srv.Addr(), err)
		}
		return n
	}
	if n := keysOn(master); n == 0 {
		t.Error("the master holds no key")
	}
	if n1, n2 := keysOn(replica), keysOn(replica2); n1 == 0 && n2 == 0 {
		t.Error("no replica holds a key, though every 202 waited for one")
	}

	// 'asyncgate keys' reaches the same master: a key it creates there is
	// one the API takes.
	placeWithNewKey(t, apiURL, "--redis-sentinel", []string{"--redis-sentinel", sentinelURL}, env(nil))

	// kill -9 the master: the sentinel promotes a replica, both processes
	// follow it with no restart, the acknowledged order is still there and
	// a new one runs to its end.
	master.Kill()
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
	if o := waitTerminal(t, apiURL, id, time.Now().Add(30*time.Second)); o.Status != orders.Executed {
		t.Errorf("after the failover, the first order is %s", o.Status)
	}
	if o := waitTerminal(t, apiURL, id2, time.Now().Add(90*time.Second)); o.Status != orders.Executed {
		t.Errorf("order %s placed after the failover ended %s (%s)", id2, o.Status, o.Reason)
	}
	if n := s.Executions(id2); n != 1 {
		t.Errorf("order %s executed %d times", id2, n)
	}
}
