package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/asyncgate/asyncgate/server"
)

// The Bearer scheme is case-insensitive (RFC 9110, section 11.1): before,
// only "Bearer " with a capital B was accepted.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	for _, tt := range []struct {
		header string
		status int
	}{
		{"Bearer " + keyA, http.StatusOK},
		{"bearer " + keyA, http.StatusOK},
		{"BEARER " + keyA, http.StatusOK},
		{"bEaReR  " + keyA, http.StatusOK},
		{"Basic " + keyA, http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
		{"Bearer" + keyA, http.StatusUnauthorized},
		{"bearer not-a-key-0123456789", http.StatusUnauthorized},
	} {
		a := b.must(t, "GET", "/v1/orders", "", "", "Authorization", tt.header)
		if a.status != tt.status {
			t.Errorf("Authorization %q: status %d, want %d; body %s", tt.header, a.status, tt.status, a.body)
		}
	}
}

// A problem's instance is a URI reference: the request path percent-encoded
// (before, a path with a space or '<' was echoed raw).
func TestProblemInstanceIsURIReference(t *testing.T) {
	t.Parallel()
	b := setupContract(t, server.Config{}, nil)
	for _, tt := range []struct{ path, want string }{
		{"/v1/orders/a%20b%3Cc%3E%22", "/v1/orders/a%20b%3Cc%3E%22"},
		{"/v1/orders/%E2%82%AC", "/v1/orders/%E2%82%AC"},
	} {
		a := b.must(t, "GET", tt.path, keyA, "")
		p := decode[server.Problem](t, a.body)
		if p.Instance != tt.want {
			t.Errorf("GET %s: instance %q, want %q", tt.path, p.Instance, tt.want)
		}
		if strings.ContainsAny(p.Instance, " <>\"") {
			t.Errorf("instance %q has characters a URI may not", p.Instance)
		}
		if _, err := url.Parse(p.Instance); err != nil {
			t.Errorf("instance %q: %v", p.Instance, err)
		}
	}
}
