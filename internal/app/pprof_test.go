package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// PprofAddr serves Go's profiles on a listener of their own, and only
// there; a profile longer than the cap is refused.
func TestPprofListener(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	cfg := fastConfig(rdb, "http://127.0.0.1:9") // never called
	cfg.Addr, cfg.PprofAddr, cfg.Logger = "127.0.0.1:0", "127.0.0.1:0", testLogger(t)
	a, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	get := func(url string) (int, string) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if a.PprofURL() == "" {
		t.Fatal("no pprof listener")
	}
	if code, body := get(a.PprofURL() + "/debug/pprof/cmdline"); code != http.StatusOK || body == "" {
		t.Fatalf("cmdline: %d %q", code, body)
	}
	if code, body := get(a.PprofURL() + "/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Fatalf("heap: %d %.80q", code, body)
	}
	if code, _ := get(a.PprofURL() + "/debug/pprof/profile?seconds=121"); code != http.StatusBadRequest {
		t.Fatalf("a 121 s profile: %d, want 400", code)
	}
	if code, _ := get(a.URL() + "/debug/pprof/cmdline"); code == http.StatusOK {
		t.Fatal("the API's port serves profiles")
	}
}
