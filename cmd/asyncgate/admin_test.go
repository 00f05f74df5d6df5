package main

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/proctest"
)

// TestDevPrintsTheDashboard: `asyncgate dev` prints the dashboard's and the
// queues' URLs, and its session cookies work over plain http (no Secure).
func TestDevPrintsTheDashboard(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var out proctest.Buffer
	done := make(chan error, 1)
	const admin = "ag_dev_admin_0123456789abcdef"
	go func() {
		done <- run(ctx, []string{"asyncgate", "dev", "--addr", "127.0.0.1:0", "--log-level", "error"}, &out,
			env(map[string]string{"ASYNCGATE_DEV_ADMIN_KEY": admin}))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	})
	dash := regexp.MustCompile(`(?m)^  Dashboard  (http://127\.0\.0\.1:\d+)/admin/   \(log in with the admin key\)$`)
	deadline := time.Now().Add(30 * time.Second)
	var m []string
	for m = dash.FindStringSubmatch(out.String()); m == nil; m = dash.FindStringSubmatch(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no dashboard line in 30s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the output of the goroutine
	}
	base := m[1]
	if !strings.Contains(out.String(), "\n  Queues     "+base+"/admin/queues\n") {
		t.Fatalf("no queues line:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "\n  Durability relaxed: ") {
		t.Errorf("dev does not say it runs relaxed:\n%s", out.String())
	}
	c := apitest.Client(t, base)
	resp, err := c.Get("/admin/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/login?next=%2Fadmin%2F" {
		t.Fatalf("GET /admin/: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = c.PostForm("/admin/login", url.Values{"key": {admin}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "ag_admin_session" {
			session = ck
		}
	}
	if session == nil || session.Secure || !session.HttpOnly {
		t.Fatalf("dev session cookie %+v: want HttpOnly without Secure", session)
	}
}
