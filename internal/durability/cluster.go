package durability

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redisslot"
)

// On a Redis Cluster (a *redis.ClusterClient) each master has its own
// replication stream and its own AOF, and WAIT or WAITAOF counts only the
// calling connection's writes on that master. An acknowledged write touched
// the tenant's slot and the queue's slot, which may be on any masters, so the
// barrier runs its pipeline (a SET, then WAIT or WAITAOF) on every master at
// once, each on that master's own client: one round trip in parallel. Its SET
// on a master goes to a key of a slot that master serves,
// ag:durability:barrier:{N} with N found for it (clusterKeys); after a
// failover or a resharding the keys are found again. Check reads the settings
// of every master and names the one that does not hold.
//
// Keys (cluster only):
//
//	ag:durability:barrier:{N}  string  the barrier's own write on the master serving {N}'s slot

// node is one Redis whose settings Check reads: the one of a plain client,
// or each master of a cluster (name is its address then).
type node struct {
	name string
	c    nodeClient
}

// nodeClient is a *redis.Client or a plain client's UniversalClient.
type nodeClient interface {
	redis.Cmdable
	Do(ctx context.Context, args ...any) *redis.Cmd
}

func (n node) on() string {
	if n.name == "" {
		return ""
	}
	return " on the cluster master " + n.name
}

// nodesOf is the one Redis of rdb, or every master of a cluster client.
func nodesOf(ctx context.Context, rdb redis.UniversalClient) ([]node, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return []node{{c: rdb}}, nil
	}
	var mu sync.Mutex
	var nodes []node
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		nodes = append(nodes, node{name: c.Options().Addr, c: c})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("the cluster names no master")
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].name < nodes[j].name })
	return nodes, nil
}

// clusterKeys holds, per master address, a barrier key of a slot it serves.
type clusterKeys struct {
	cc *redis.ClusterClient
	mu sync.Mutex
	by map[string]string
}

// key is a barrier key whose slot master addr serves, by CLUSTER SLOTS.
func (k *clusterKeys) key(ctx context.Context, addr string) (string, error) {
	k.mu.Lock()
	key, ok := k.by[addr]
	k.mu.Unlock()
	if ok {
		return key, nil
	}
	ranges, err := k.cc.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	by := make(map[string]string)
	masters := countMasters(ranges)
	for i := 0; len(by) < masters && i < 1<<20; i++ {
		tag := strconv.Itoa(i)
		slot := redisslot.Of(tag)
		for _, r := range ranges {
			if r.Start <= slot && slot <= r.End && len(r.Nodes) > 0 {
				if _, ok := by[r.Nodes[0].Addr]; !ok {
					by[r.Nodes[0].Addr] = Key + ":{" + tag + "}"
				}
			}
		}
	}
	k.mu.Lock()
	k.by = by
	k.mu.Unlock()
	if key, ok := by[addr]; ok {
		return key, nil
	}
	return "", fmt.Errorf("CLUSTER SLOTS gives %s no slot", addr)
}

// forget drops the keys: the slots moved (MOVED) or a master went away.
func (k *clusterKeys) forget() {
	k.mu.Lock()
	k.by = nil
	k.mu.Unlock()
}

func countMasters(ranges []redis.ClusterSlot) int {
	m := make(map[string]bool)
	for _, r := range ranges {
		if len(r.Nodes) > 0 {
			m[r.Nodes[0].Addr] = true
		}
	}
	return len(m)
}

// syncCluster runs the barrier on every master in parallel; the first
// failure is the answer (a *NotDurableError names its master).
func (b *Barrier) syncCluster(ctx context.Context) error {
	cc := b.keys.cc
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		err := b.syncNode(ctx, c)
		if err != nil && isMoved(err) {
			// The slot of this master's barrier key moved: find the keys again.
			b.keys.forget()
			err = b.syncNode(ctx, c)
		}
		return err
	})
	if err == nil {
		return nil
	}
	var nd *NotDurableError
	if !errors.As(err, &nd) {
		// A master went away or the slots moved: learn the cluster again
		// for the next barrier.
		b.keys.forget()
		cc.ReloadState(ctx)
		return syncError{err}
	}
	return err
}

// syncNode is the barrier's pipeline on one master, on that master's client.
func (b *Barrier) syncNode(ctx context.Context, c *redis.Client) error {
	addr := c.Options().Addr
	key, err := b.keys.key(ctx, addr)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	err = b.syncOn(ctx, c, key, addr)
	var nd *NotDurableError
	if err != nil && !errors.As(err, &nd) {
		return fmt.Errorf("%s: %w", addr, err)
	}
	return err
}

func isMoved(err error) bool {
	s := err.Error()
	return strings.Contains(s, "MOVED ") || strings.Contains(s, "ASK ")
}
