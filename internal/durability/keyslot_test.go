package durability

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redistest"
)

// keySlot agrees with Redis's CLUSTER KEYSLOT on a node with cluster support.
func TestKeySlot(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{Cluster: true, Databases: 1})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx := context.Background()
	for i := range 2000 {
		tag := fmt.Sprint(i)
		want, err := c.ClusterKeySlot(ctx, Key+":{"+tag+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(tag); int64(got) != want {
			t.Fatalf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", tag, got, want)
		}
	}
}
