package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

// A topology is the Redis a deployment's processes run on: one redis-server, a
// Sentinel-managed master with its replica, or a Redis Cluster. The deployment passes
// its flags to every asyncgate process and knows nothing else of it; a scenario that
// kills a master reaches it through the topology's own type.
type topology interface {
	// flags are the command-line flags that name the Redis to every process.
	flags() []string
	// nodes are every redis-server of the topology that is up (masters and replicas,
	// no sentinels): where the Redis commands are counted.
	nodes() []*redistest.Server
	// String names the topology in tables.
	String() string
}

// single is one redis-server.
type single struct{ s *redistest.Server }

func (s single) flags() []string            { return []string{"--redis", s.s.URL(0)} }
func (s single) nodes() []*redistest.Server { return []*redistest.Server{s.s} }
func (s single) String() string             { return "one Redis" }

// sentinelled is a master, its replicas and three sentinels (a quorum of two) on
// loopback, the processes finding the master through the sentinels only.
type sentinelled struct {
	master    *redistest.Server
	replicas  []*redistest.Server
	sentinels []*redistest.Sentinel
	killed    map[*redistest.Server]bool
}

// masterName is the name the sentinels monitor the master under.
const masterName = "chaos-master"

// startSentinelled starts a master with AOF as opts says, one replica like it, and three
// sentinels.
func startSentinelled(t *testing.T, opts redistest.Options) *sentinelled {
	t.Helper()
	s := &sentinelled{master: redistest.Start(t, opts), killed: make(map[*redistest.Server]bool)}
	s.replicas = append(s.replicas, redistest.StartReplica(t, s.master, opts))
	for range 3 {
		s.sentinels = append(s.sentinels, redistest.StartSentinel(t, s.master, masterName, 2))
	}
	return s
}

func (s *sentinelled) flags() []string {
	u := "redis://" + s.sentinels[0].Addr() + "/0?master_name=" + masterName
	for _, x := range s.sentinels[1:] {
		u += "&addr=" + x.Addr()
	}
	return []string{"--redis-sentinel", u}
}

func (s *sentinelled) nodes() []*redistest.Server {
	var out []*redistest.Server
	for _, n := range append([]*redistest.Server{s.master}, s.replicas...) {
		if !s.killed[n] {
			out = append(out, n)
		}
	}
	return out
}

func (s *sentinelled) String() string { return "Sentinel (master, 1 replica, 3 sentinels)" }

// currentMaster is the server the sentinels name now.
func (s *sentinelled) currentMaster(t *testing.T) *redistest.Server {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].Addr()})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(context.Background(), masterName).Result()
	if err != nil || len(addr) != 2 {
		t.Fatalf("ask the sentinel for the master: %v %v", addr, err)
	}
	for _, n := range append([]*redistest.Server{s.master}, s.replicas...) {
		if n.Addr() == addr[0]+":"+addr[1] {
			return n
		}
	}
	t.Fatalf("the sentinel names %v, no server of ours", addr)
	return nil
}

// failover kills -9 the master the sentinels name now, waits until they name another,
// and restarts the old one (from its AOF), as its supervisor would: the sentinels make
// it a replica of the new master, so that --redis-min-replicas 1 can hold again. It
// returns the killed master and how long the sentinels took to name another.
func (s *sentinelled) failover(t *testing.T, afterKill func()) (*redistest.Server, time.Duration) {
	t.Helper()
	m := s.currentMaster(t)
	m.Kill()
	s.killed[m] = true
	if afterKill != nil {
		afterKill()
	}
	start := time.Now()
	for s.currentMaster(t) == m {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the sentinels still name the killed master %s after 30 s", m.Addr())
		}
		time.Sleep(100 * time.Millisecond) // poll with a deadline: the sentinels give no event here
	}
	took := time.Since(start)
	if err := m.Restart(); err != nil {
		t.Fatalf("restart the old master: %v", err)
	}
	delete(s.killed, m)
	return m, took
}

// replicasOf are the servers of the topology other than master that are up.
func (s *sentinelled) replicasOf(master *redistest.Server) []*redistest.Server {
	var out []*redistest.Server
	for _, n := range s.nodes() {
		if n != master {
			out = append(out, n)
		}
	}
	return out
}

// commandStats sums INFO commandstats over servers: calls per command name.
func commandStats(t *testing.T, servers []*redistest.Server) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for _, s := range servers {
		c := redis.NewClient(&redis.Options{Addr: s.Addr()})
		info, err := c.Info(context.Background(), "commandstats").Result()
		c.Close()
		if err != nil {
			t.Fatalf("INFO commandstats on %s: %v", s.Addr(), err)
		}
		for _, line := range strings.Split(info, "\n") {
			// cmdstat_get:calls=12,usec=...
			name, rest, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "cmdstat_")), ":calls=")
			if !ok || !strings.HasPrefix(line, "cmdstat_") {
				continue
			}
			var calls int64
			fmt.Sscanf(rest, "%d", &calls)
			out[name] += calls
		}
	}
	return out
}

// commandsBetween is the sum of calls in after less before, leaving out what the test
// itself sends to read them (INFO) and the replication handshake (REPLCONF, PSYNC).
func commandsBetween(before, after map[string]int64) int64 {
	var n int64
	for name, calls := range after {
		switch name {
		case "info", "replconf", "psync", "sync":
			continue
		}
		n += calls - before[name]
	}
	return n
}
