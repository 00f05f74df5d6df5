package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestBadConfigFailsClearly(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no command", []string{"asyncgate"}, nil, "no command"},
		{"unknown command", []string{"asyncgate", "fly"}, nil, `unknown command "fly"`},
		{"serve without redis", []string{"asyncgate", "serve"}, nil, "one Redis is required: --redis (ASYNCGATE_REDIS)"},
		{"bad rate limit", []string{"asyncgate", "serve", "--redis", "redis://127.0.0.1:1", "--portfolio-url", "http://p", "--execution-url", "http://e", "--rate-limit", "fast"}, nil, "--rate-limit"},
		{"bad tenant rate limit", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--tenant-rate-limits", "acme"}, nil, "--tenant-rate-limits"},
		{"keys without redis", []string{"asyncgate", "keys", "list"}, nil, "one Redis is required: --redis (ASYNCGATE_REDIS)"},
		{"keys create without tenant", []string{"asyncgate", "keys", "create", "--redis", "redis://127.0.0.1:1"}, nil, "--tenant is required"},
		{"worker without downstreams", []string{"asyncgate", "worker", "--redis", "redis://127.0.0.1:1"}, nil, "--portfolio-url is required"},
		{"bad downstream url", []string{"asyncgate", "worker", "--redis", "redis://127.0.0.1:1", "--portfolio-url", "ftp://x", "--execution-url", "http://e"}, nil, "--portfolio-url must be an http(s) URL"},
		{"bad key pairs", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--api-keys", "justakey"}, nil, "key=tenant"},
		{"bad tenant", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--api-keys", "k-0123456789abcdef=Bad Tenant"}, nil, "tenant"},
		{"bad env duration", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--api-keys", "k-0123456789abcdef=acme"}, map[string]string{"ASYNCGATE_ORDER_DEADLINE": "soon"}, "ASYNCGATE_ORDER_DEADLINE"},
		{"bad redis url", []string{"asyncgate", "api", "--redis", "mysql://x", "--api-keys", "k-0123456789abcdef=acme"}, nil, "redis url"},
		{"bad flag", []string{"asyncgate", "serve", "--nope"}, nil, "unknown flag --nope"},
		{"bad duration names the flag", []string{"asyncgate", "worker", "--reconcile-interval", "often"}, nil, "--reconcile-interval: want a positive duration such as 15s"},
		{"bad int names the flag", []string{"asyncgate", "worker", "--concurrency", "many"}, nil, "--concurrency: want a whole number"},
		{"bad bool names the flag", []string{"asyncgate", "api", "--webhook-allow-private=perhaps"}, nil, "--webhook-allow-private: want true or false"},
		{"bad webhook cidr", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--webhook-allow-cidrs", "10.1/x"}, nil, "--webhook-allow-cidrs"},
		{"bad event retention", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--event-retention", "0s"}, nil, "--event-retention"},
		{"listen without key", []string{"asyncgate", "listen", "--forward-to", "http://localhost:3000/hooks"}, nil, "--api-key is required"},
		{"listen bad forward", []string{"asyncgate", "listen", "--api-key", "k", "--forward-to", "localhost:3000"}, nil, "--forward-to must be an http(s) URL"},
		{"listen bad secret", []string{"asyncgate", "listen", "--api-key", "k", "--forward-to", "http://localhost:3000/", "--secret", "nope"}, nil, "--secret must be a whsec_ secret"},
		{"listen bad replay", []string{"asyncgate", "listen", "--replay", "-1h"}, nil, "--replay"},
		{"bad env bool", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1"}, map[string]string{"ASYNCGATE_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "ASYNCGATE_WEBHOOK_ALLOW_PRIVATE"},
		{"short admin session secret", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--admin-session-secret", "short"}, nil, "--admin-session-secret"},
		{"bad admin queues read-only", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1"}, map[string]string{"ASYNCGATE_ADMIN_QUEUES_READONLY": "maybe"}, "ASYNCGATE_ADMIN_QUEUES_READONLY"},
		{"bad log format", []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--log-format", "xml"}, nil, "--log-format"},
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

func TestHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"asyncgate", "help"}, &out, env(nil)); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"dev", "serve", "api", "worker", "sim"} {
		if !strings.Contains(out.String(), cmd) {
			t.Errorf("usage does not mention %s", cmd)
		}
	}
}
