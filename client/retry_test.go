package client_test

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/client"
)

// Only transient failures are retried: 429, 502, 503, 504 and connection
// errors. Any other 4xx or 5xx comes back after one attempt (before, a
// refused certificate, a 502 and a 504 were handled the other way round).
func TestOnlyTransientFailuresRetried(t *testing.T) {
	for _, tt := range []struct {
		status   int
		attempts int
	}{
		{http.StatusBadRequest, 1},
		{http.StatusNotFound, 1},
		{http.StatusUnprocessableEntity, 1},
		{http.StatusConflict, 1},
		{http.StatusInternalServerError, 1},
		{http.StatusNotImplemented, 1},
		{http.StatusTooManyRequests, 3},
		{http.StatusBadGateway, 3},
		{http.StatusServiceUnavailable, 3},
		{http.StatusGatewayTimeout, 3},
	} {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(tt.status)
			fmt.Fprintf(w, `{"type":"about:blank","title":"x","status":%d}`, tt.status)
		}))
		c := newClient(t, srv.URL, client.WithRetry(3, time.Millisecond, time.Second))
		_, err := c.PlaceOrder(ctxFor(t), marketOrder("acc-x"))
		srv.Close()
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != tt.status {
			t.Errorf("%d: err = %v, want the problem", tt.status, err)
		}
		if n := int(calls.Load()); n != tt.attempts {
			t.Errorf("%d: %d attempts, want %d", tt.status, n, tt.attempts)
		}
	}
}

// A 502 or 504 with Retry-After is retried after it.
func TestRetryAfterHonouredOnGatewayErrors(t *testing.T) {
	for _, status := range []int{http.StatusBadGateway, http.StatusGatewayTimeout} {
		var mu sync.Mutex
		var at []time.Time
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(status)
		}))
		c := newClient(t, srv.URL, client.WithRetry(2, time.Millisecond, 5*time.Second))
		_, err := c.GetOrder(ctxFor(t), client.OrderId{1})
		srv.Close()
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != status {
			t.Fatalf("err = %v", err)
		}
		mu.Lock()
		if len(at) != 2 || at[1].Sub(at[0]) < 900*time.Millisecond {
			t.Errorf("%d: attempts at %v, want 2, a Retry-After of 1s apart", status, at)
		}
		mu.Unlock()
	}
}

// A refused certificate is not transient: one attempt, not five.
func TestCertificateErrorNotRetried(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	d := &countingDoer{status: map[int]int{}}
	var tries atomic.Int32
	c := newClient(t, srv.URL, client.WithHTTPDoer(doerFunc(func(r *http.Request) (*http.Response, error) {
		tries.Add(1)
		return d.Do(r)
	})), client.WithRetry(5, 50*time.Millisecond, time.Second))
	start := time.Now()
	_, err := c.GetOrder(ctxFor(t), client.OrderId{1})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
	if n := tries.Load(); n != 1 {
		t.Errorf("%d attempts after a certificate error, want 1 (took %v)", n, time.Since(start))
	}
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// New refuses a base URL without scheme or host; a base ending in /v1 does
// not double the prefix (before, "host:8080" and "/v1" were accepted and
// ".../v1" sent requests to /v1/v1/...).
func TestNewChecksBaseURL(t *testing.T) {
	for _, bad := range []string{"asyncgate.example.com", "localhost:8080", "/v1", "http://", "ftp://example.com", "https://example.com/?x=1"} {
		if _, err := client.New(bad, apiKey); err == nil {
			t.Errorf("New(%q) accepted it", bad)
		}
	}
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	for base, want := range map[string]string{
		srv.URL:            "/v1/orders/00000000-0000-0000-0000-000000000000",
		srv.URL + "/v1":    "/v1/orders/00000000-0000-0000-0000-000000000000",
		srv.URL + "/v1/":   "/v1/orders/00000000-0000-0000-0000-000000000000",
		srv.URL + "/gw/v1": "/gw/v1/orders/00000000-0000-0000-0000-000000000000",
		srv.URL + "/gw/":   "/gw/v1/orders/00000000-0000-0000-0000-000000000000",
	} {
		mu.Lock()
		paths = nil
		mu.Unlock()
		c := newClient(t, base)
		c.GetOrder(ctxFor(t), client.OrderId{})
		mu.Lock()
		if len(paths) != 1 || paths[0] != want {
			t.Errorf("base %q: requested %q, want %q", base, paths, want)
		}
		mu.Unlock()
	}
	// And against the real server.
	c := newClient(t, serverURL+"/v1")
	o, err := c.PlaceOrder(ctxFor(t), marketOrder("acc-v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetOrder(ctxFor(t), o.Id); err != nil {
		t.Fatal(err)
	}
}

// The generated code's comments have no doubled empty comment lines (a
// description ending in a newline, then its example, made "//\n//").
func TestGeneratedCommentsTidy(t *testing.T) {
	f, err := os.Open("api.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	prevEmpty, line := false, 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		empty := l == "//"
		if empty && prevEmpty {
			t.Errorf("api.gen.go:%d: a second empty comment line", line)
		}
		if strings.HasPrefix(l, "// //") || strings.HasPrefix(l, "///") {
			t.Errorf("api.gen.go:%d: doubled slashes: %s", line, l)
		}
		prevEmpty = empty
	}
}
