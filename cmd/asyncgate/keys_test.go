package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/server"
)

// TestKeysCommand issues, lists and revokes keys with `asyncgate keys`
// against a real Redis, and uses them on an API that shares it.
func TestKeysCommand(t *testing.T) {
	t.Parallel()
	redisURL := redistest.Start(t, redistest.Options{}).URL(0)
	keys := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), append([]string{"asyncgate", "keys"}, args...), &out, env(map[string]string{"ASYNCGATE_REDIS": redisURL})); err != nil {
			t.Fatalf("keys %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	created := keys("create", "--tenant", "acme", "--name", "ci")
	secret := regexp.MustCompile(`ag_live_[0-9A-Za-z]{43}`).FindString(created)
	id := regexp.MustCompile(`key_[0-9a-f]{16}`).FindString(created)
	if secret == "" || id == "" || !strings.Contains(created, "shown only this once") {
		t.Fatalf("create printed no key, id or warning:\n%s", created)
	}
	keys("create", "--tenant", "ops", "--admin", "--redis", redisURL) // the flag beats the environment

	list := keys("list")
	if !strings.Contains(list, id) || !strings.Contains(list, "acme") || strings.Contains(list, secret) {
		t.Errorf("list does not show %s of acme, or shows its secret:\n%s", id, list)
	}
	var listed []apikeys.Key
	if err := json.Unmarshal([]byte(keys("list", "--json", "--tenant", "ops")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || !listed[0].Admin || listed[0].Tenant != "ops" {
		t.Errorf("list --json --tenant ops = %+v, want the one admin key", listed)
	}

	// An API on the same Redis accepts the key until it is revoked.
	rdb, err := app.NewRedis(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Config{Redis: rdb, API: true, Logger: slog.New(slog.DiscardHandler),
		Server: server.Config{KeyCacheTTL: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Shutdown(context.Background()); rdb.Close() })
	status := func() int {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "/v1/orders", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := apitest.Client(t, srv.URL).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("GET /v1/orders with the new key: %d", got)
	}
	if out := keys("revoke", id); !strings.Contains(out, "Revoked "+id) {
		t.Errorf("revoke printed %q", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for status() != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the revoked key still works after 5s (cache TTL 100ms)")
		}
		time.Sleep(20 * time.Millisecond) // poll: the cache entry expires by time
	}
	if list := keys("list"); strings.Contains(list, id) {
		t.Errorf("list shows the revoked key:\n%s", list)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"asyncgate", "keys", "revoke", id, "--redis", redisURL}, &out, env(nil)); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("revoking again: %v, want no key", err)
	}
}

func TestParseRateLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want server.RateLimit
		bad  bool
	}{
		{in: "", want: server.RateLimit{}},
		{in: "off", want: server.RateLimit{}},
		{in: "100/s", want: server.RateLimit{Rate: 100, Period: time.Second}},
		{in: "6000/m:200", want: server.RateLimit{Rate: 6000, Period: time.Minute, Burst: 200}},
		{in: "10/500ms", want: server.RateLimit{Rate: 10, Period: 500 * time.Millisecond}},
		{in: "5/h", want: server.RateLimit{Rate: 5, Period: time.Hour}},
		{in: "fast", bad: true},
		{in: "0/s", bad: true},
		{in: "10/fortnight", bad: true},
		{in: "10/s:0", bad: true},
		{in: "10/1us", bad: true},
	} {
		got, err := parseRateLimit(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseRateLimit(%q) = %+v, %v; want %+v, error %t", tt.in, got, err, tt.want, tt.bad)
		}
	}
	m, err := parseTenantRateLimits("acme=1000/s:2000, globex=off")
	if err != nil || m["acme"] != (server.RateLimit{Rate: 1000, Period: time.Second, Burst: 2000}) || m["globex"] != (server.RateLimit{}) || len(m) != 2 {
		t.Errorf("parseTenantRateLimits = %v, %v", m, err)
	}
}
