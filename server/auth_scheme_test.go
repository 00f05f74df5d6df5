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

// FuzzAuthorizationHeader: whatever the Authorization header, the answer is
// 200 or 401, never a 5xx; and "<bearer in any case> <spaces> <key>" is 200.
func FuzzAuthorizationHeader(f *testing.F) {
	b := setupContract(f, server.Config{}, nil)
	f.Add("Bearer", " ", keyA)
	f.Add("bearer", "  ", keyA)
	f.Add("Basic", " ", "dXNlcjpwdw==")
	f.Add("Bearer", "", "")
	f.Add("BeArEr", "\t", keyA)
	f.Fuzz(func(t *testing.T, scheme, sep, key string) {
		h := scheme + sep + key
		req, err := http.NewRequest("GET", b.url+"/v1/orders?limit=1", nil)
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Authorization", h)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Skip() // a header value net/http will not send
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: status %d", h, res.StatusCode)
		}
		wantOK := strings.EqualFold(scheme, "bearer") && sep != "" && strings.Trim(sep, " ") == "" && key == keyA
		if wantOK && res.StatusCode != http.StatusOK {
			t.Fatalf("Authorization %q: status %d, want 200", h, res.StatusCode)
		}
	})
}
