package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { Main(m) }

func TestParseSyncTrace(t *testing.T) {
	const aof = "/d/appendonlydir/appendonly.aof.1.incr.aof"
	trace := `10 write(8</d/temp-rewriteaof-10.aof>, "REDIS", 89) = 89
10 write(8<` + aof + `>, "*2\r\n", 50) = 50
10 fdatasync(8<` + aof + `>) = 0
10 write(8<` + aof + `>, "a = 3", 27) = 27
11 fdatasync(8<` + aof + `> <unfinished ...>
10 write(8<` + aof + `>, "*3", 10 <unfinished ...>
11 <... fdatasync resumed>) = 0
10 <... write resumed>) = 10
10 write(9<socket:[1]>, "+OK", 5) = 5
10 write(8<` + aof + `>, "*3", 7) = 7
11 fdatasync(8<` + aof + `> <unfinished ...>
10 write(8<` + aof + `>, "*3", 4) = -1 EAGAIN (Resource temporarily unavailable)
10 +++ killed by SIGKILL +++
`
	path := filepath.Join(t.TempDir(), "trace")
	if err := os.WriteFile(path, []byte(trace), 0o600); err != nil {
		t.Fatal(err)
	}
	written, synced, err := parseSyncTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	// The fsync that started after 77 bytes succeeded; the last one never finished.
	if len(written) != 1 || written[aof] != 94 || synced[aof] != 77 {
		t.Errorf("written %v, synced %v; want 94 and 77 bytes of %s", written, synced, aof)
	}
}

// TestCrash writes keys to a traced server and crashes it: with appendfsync always
// every acknowledged key survives; with everysec the keys of the last moments are cut.
func TestCrash(t *testing.T) {
	for _, policy := range []string{"always", "everysec"} {
		t.Run(policy, func(t *testing.T) {
			for attempt := 1; ; attempt++ {
				s := Start(t, Options{AOF: true, Appendfsync: policy, TraceSyncs: true})
				c := redis.NewClient(&redis.Options{Addr: s.Addr()})
				ctx := context.Background()
				const n = 300
				for i := range n {
					if err := c.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
						t.Fatal(err)
					}
				}
				rep, err := s.Crash()
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Restart(); err != nil {
					t.Fatal(err)
				}
				c = redis.NewClient(&redis.Options{Addr: s.Addr()})
				kept, err := c.DBSize(ctx).Result()
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("attempt %d: %d of %d acknowledged keys kept; %s", attempt, kept, n, rep)
				if policy == "always" {
					if kept != n {
						t.Errorf("appendfsync always kept %d of %d acknowledged keys", kept, n)
					}
					return
				}
				if kept < n && rep.Cut() > 0 {
					return
				}
				if attempt == 3 {
					t.Fatalf("appendfsync everysec lost nothing in %d crashes", attempt)
				}
			}
		})
	}
}
