package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configure a Redis Cluster.
type ClusterOptions struct {
	// Masters is the number of masters; Redis Cluster needs at least 3.
	// Defaults to 3.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master (0 or more).
	ReplicasPerMaster int
	// AOF and Appendfsync are as in [Options], for every node.
	AOF         bool
	Appendfsync string
	// NodeTimeout is cluster-node-timeout. Defaults to 1s: a master that
	// dies is replaced by its replica a few seconds later.
	NodeTimeout time.Duration
}

// Cluster is a Redis Cluster of redis-server child processes on free ports,
// joined with redis-cli --cluster create.
type Cluster struct {
	opts  ClusterOptions
	nodes []*Server
}

// StartCluster starts a cluster for the test, waits until it is healthy (every
// slot served, every replica in sync) and stops it when the test ends.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	c, err := NewCluster(opts, t.TempDir())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// NewCluster starts a cluster with each node's files in a directory under dir.
// Close stops it. (For harnesses outside a test; tests use [StartCluster].)
func NewCluster(opts ClusterOptions, dir string) (*Cluster, error) {
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 {
		return nil, fmt.Errorf("redistest: a Redis Cluster needs at least 3 masters, not %d", opts.Masters)
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = time.Second
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, errors.New("redis-cli not found on PATH: install it (apt-get install redis-tools) or run `make deps`, which does")
	}
	c := &Cluster{opts: opts}
	n := opts.Masters * (1 + opts.ReplicasPerMaster)
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			c.Close()
			return nil, err
		}
		s, err := StartServer(Options{
			AOF: opts.AOF, Appendfsync: opts.Appendfsync, Databases: 1,
			Cluster: true, ClusterNodeTimeout: opts.NodeTimeout,
		}, d)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	// redis-cli makes the first Masters nodes the masters and spreads the
	// slots evenly over them; the others become their replicas.
	args := []string{"--cluster", "create"}
	for _, s := range c.nodes {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", fmt.Sprint(opts.ReplicasPerMaster), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close stops every node.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, s := range c.nodes {
		wg.Go(s.Close)
	}
	wg.Wait()
}

// Nodes are every node, masters and replicas, in the order they were started.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Addrs are the host:port of every node.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, s := range c.nodes {
		addrs = append(addrs, s.Addr())
	}
	return addrs
}

// URL is the cluster in go-redis's cluster URL form, as --redis-cluster takes
// it: redis://first?addr=second&addr=third…, with every node that is a master
// now (or every node when no node answers).
func (c *Cluster) URL() string {
	addrs := c.masterAddrs()
	if len(addrs) == 0 {
		addrs = c.Addrs()
	}
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// NewClient returns a cluster client on every node, closed when the test ends.
func (c *Cluster) NewClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Masters are the nodes that are masters now, as the running nodes see it (a
// failover changes them), sorted by address. It is empty when no node answers.
func (c *Cluster) Masters() []*Server {
	var ms []*Server
	for _, a := range c.masterAddrs() {
		if s := c.node(a); s != nil {
			ms = append(ms, s)
		}
	}
	return ms
}

// Replicas are the nodes that are replicas now, sorted by address.
func (c *Cluster) Replicas() []*Server {
	view, err := c.view(context.Background())
	if err != nil {
		return nil
	}
	var rs []*Server
	for _, n := range view {
		if n.replicaOf != "" && !n.failed {
			if s := c.node(n.addr); s != nil {
				rs = append(rs, s)
			}
		}
	}
	return rs
}

// ReplicasOf are the nodes replicating master now.
func (c *Cluster) ReplicasOf(master *Server) []*Server {
	view, err := c.view(context.Background())
	if err != nil {
		return nil
	}
	var id string
	for _, n := range view {
		if n.addr == master.Addr() {
			id = n.id
		}
	}
	var rs []*Server
	for _, n := range view {
		if id != "" && n.replicaOf == id && !n.failed {
			if s := c.node(n.addr); s != nil {
				rs = append(rs, s)
			}
		}
	}
	return rs
}

// MasterOf is the node that serves key's hash slot now.
func (c *Cluster) MasterOf(key string) (*Server, error) {
	ctx := context.Background()
	for _, s := range c.nodes {
		if !s.Running() {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			cl.Close()
			continue
		}
		shards, err := cl.ClusterSlots(ctx).Result()
		cl.Close()
		if err != nil {
			continue
		}
		for _, r := range shards {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				if n := c.node(r.Nodes[0].Addr); n != nil {
					return n, nil
				}
			}
		}
		return nil, fmt.Errorf("redistest: no master serves slot %d of %q", slot, key)
	}
	return nil, errors.New("redistest: no cluster node answers")
}

// WaitHealthy waits until every running node says cluster_state:ok with every
// slot assigned and served, every running node agrees on the masters, each
// master runs, and every running replica's link to its master is up (so a
// test may wait for it after a failover too).
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = c.healthy(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: cluster not healthy after %s: %v", timeout, last)
		}
		time.Sleep(50 * time.Millisecond) // poll with a deadline: Redis gives no event
	}
}

func (c *Cluster) healthy() error {
	ctx := context.Background()
	var masters string
	for _, s := range c.nodes {
		if !s.Running() {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil {
			cl.Close()
			return fmt.Errorf("%s: %v", s.Addr(), err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384"} {
			if !strings.Contains(info, want+"\r\n") {
				cl.Close()
				return fmt.Errorf("%s: no %s in CLUSTER INFO", s.Addr(), want)
			}
		}
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "slave" {
			repl, _ := cl.Info(ctx, "replication").Result()
			if !strings.Contains(repl, "master_link_status:up") {
				cl.Close()
				return fmt.Errorf("replica %s: master link not up", s.Addr())
			}
		}
		nodes, err := cl.ClusterNodes(ctx).Result()
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s: %v", s.Addr(), err)
		}
		var ms []string
		for _, n := range parseClusterNodes(nodes) {
			if n.master && !n.failed && n.slots {
				ms = append(ms, n.addr)
			}
		}
		sort.Strings(ms)
		m := strings.Join(ms, ",")
		if masters != "" && m != masters {
			return fmt.Errorf("nodes disagree on the masters: %s, %s", masters, m)
		}
		masters = m
		for _, a := range ms {
			if n := c.node(a); n == nil || !n.Running() {
				return fmt.Errorf("%s sees %s as a master, which is down", s.Addr(), a)
			}
		}
	}
	if masters == "" {
		return errors.New("no node answers")
	}
	if got := strings.Count(masters, ",") + 1; got != c.opts.Masters {
		return fmt.Errorf("%d masters with slots, want %d: %s", got, c.opts.Masters, masters)
	}
	return nil
}

// KeysPerMaster is the number of keys on each master now (DBSIZE), by address.
func (c *Cluster) KeysPerMaster(ctx context.Context) (map[string]int, error) {
	out := make(map[string]int)
	for _, s := range c.Masters() {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		n, err := cl.DBSize(ctx).Result()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("redistest: DBSIZE on %s: %w", s.Addr(), err)
		}
		out[s.Addr()] = int(n)
	}
	if len(out) == 0 {
		return nil, errors.New("redistest: no master answers")
	}
	return out, nil
}

// CountKeys is the number of keys matching pattern (a SCAN MATCH glob) on each
// master now, by address; a master without any is in the map with 0.
func (c *Cluster) CountKeys(ctx context.Context, pattern string) (map[string]int, error) {
	out := make(map[string]int)
	for _, s := range c.Masters() {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		n := 0
		it := cl.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			n++
		}
		err := it.Err()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("redistest: SCAN on %s: %w", s.Addr(), err)
		}
		out[s.Addr()] = n
	}
	if len(out) == 0 {
		return nil, errors.New("redistest: no master answers")
	}
	return out, nil
}

// Running says whether the server's process runs (not stopped or killed).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

func (c *Cluster) node(addr string) *Server {
	for _, s := range c.nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// masterAddrs are the addresses of the masters with slots that no running
// node considers failed, as the first running node that answers sees it.
func (c *Cluster) masterAddrs() []string {
	view, err := c.view(context.Background())
	if err != nil {
		return nil
	}
	var addrs []string
	for _, n := range view {
		if n.master && !n.failed && n.slots {
			addrs = append(addrs, n.addr)
		}
	}
	sort.Strings(addrs)
	return addrs
}

func (c *Cluster) view(ctx context.Context) ([]clusterNode, error) {
	for _, s := range c.nodes {
		if !s.Running() {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		text, err := cl.ClusterNodes(ctx).Result()
		cl.Close()
		if err == nil {
			return parseClusterNodes(text), nil
		}
	}
	return nil, errors.New("redistest: no cluster node answers")
}

type clusterNode struct {
	id, addr  string
	master    bool
	failed    bool   // fail or fail? (suspected)
	replicaOf string // the master's id, for a replica
	slots     bool   // serves at least one slot
}

// parseClusterNodes reads CLUSTER NODES: "id ip:port@bus flags master ping pong epoch link slot…".
func parseClusterNodes(text string) []clusterNode {
	var out []clusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := "," + f[2] + ","
		n := clusterNode{
			id: f[0], addr: addr,
			master: strings.Contains(flags, ",master,"),
			failed: strings.Contains(flags, ",fail,") || strings.Contains(flags, ",fail?,"),
			slots:  len(f) > 8,
		}
		if f[3] != "-" {
			n.replicaOf = f[3]
		}
		out = append(out, n)
	}
	return out
}
