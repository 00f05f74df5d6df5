package durability_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/durability"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// On a Redis Cluster, Check reads every master: three masters with
// appendfsync always pass (FsyncAlways); once one master runs everysec the
// check fails and names that master; a cluster without AOF fails too.
func TestClusterCheck(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, AOF: true, Appendfsync: "always"})
	ctx := context.Background()
	cc := c.NewClient(t)
	log, logs := newLogger()
	b, err := durability.Check(ctx, cc, durability.Config{Logger: log})
	if err != nil {
		t.Fatalf("Check on three fsync-always masters: %v", err)
	}
	if b.Method() != durability.FsyncAlways {
		t.Errorf("method %s, want %s", b.Method(), durability.FsyncAlways)
	}
	if err := b.Sync(ctx); err != nil {
		t.Errorf("Sync under appendfsync always: %v", err)
	}
	t.Log(strings.TrimSpace(logs.String()))

	lax := c.Masters()[1]
	one := redis.NewClient(&redis.Options{Addr: lax.Addr()})
	defer one.Close()
	if err := one.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = durability.Check(ctx, cc, durability.Config{Logger: log})
	if err == nil {
		t.Fatal("Check passed with one master on appendfsync everysec")
	}
	for _, want := range []string{"on the cluster master " + lax.Addr(), "appendfsync everysec", "--durability relaxed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Log(err)
}

// The barrier on a cluster with a replica per master: Check with
// --redis-min-replicas 1 passes without a warning; Sync passes and wrote its
// key on every master; with one replica paused, Sync times out naming that
// replica's master (the 503 path), and passes again once it resumes. After a
// master is killed and its replica takes over (the old master back as its
// replica), Sync passes again: the barrier learns the new masters.
func TestClusterBarrierWaitReplicas(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	ctx := context.Background()
	cc := c.NewClient(t)
	log, logs := newLogger()
	b, err := durability.Check(ctx, cc, durability.Config{MinReplicas: 1, Timeout: time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if b.Method() != durability.WaitReplicas || strings.Contains(logs.String(), "fewer replicas") {
		t.Fatalf("method %s, logs %s; want WAIT replicas without a warning", b.Method(), logs)
	}
	for i := range 30 {
		if err := cc.Set(ctx, "t:{tenant"+string(rune('a'+i))+"}", i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatalf("Sync with every replica up: %v", err)
	}
	per, err := c.CountKeys(ctx, durability.Key+":*")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("barrier keys per master: %v", per)
	for _, m := range c.Masters() {
		if per[m.Addr()] != 1 {
			t.Errorf("master %s holds %d barrier keys, want 1", m.Addr(), per[m.Addr()])
		}
	}

	master := c.Masters()[2]
	replica := c.ReplicasOf(master)[0]
	replica.Pause()
	err = b.Sync(ctx)
	replica.Resume()
	var nd *durability.NotDurableError
	if !errors.As(err, &nd) || nd.Node != master.Addr() || nd.Got != 0 || nd.Want != 1 {
		t.Fatalf("Sync with the replica of %s paused: %v, want a NotDurableError 0 of 1 naming that master", master.Addr(), err)
	}
	t.Log(err)
	waitSync(t, b, "the replica resumed")

	victim := c.Masters()[0]
	victim.Kill()
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitSync(t, b, "a failover")
	for _, m := range c.Masters() {
		if m == victim {
			t.Errorf("the killed master %s is a master again", victim.Addr())
		}
	}
}

// waitSync polls Sync until it passes, for at most 20s.
func waitSync(t *testing.T, b *durability.Barrier, after string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := b.Sync(ctx)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Sync still fails 20s after %s: %v", after, err)
		}
	}
}
