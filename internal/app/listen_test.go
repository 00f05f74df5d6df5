package app_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/listen"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

// listening starts an API-only App on its own loopback listener with lc's
// timeouts and caps, and returns it with its base URL.
func listening(t *testing.T, lc listen.Config) (*app.App, string) {
	t.Helper()
	rdb := redistest.Shared(t).NewClient(t)
	simSrv := httptest.NewServer(sim.New(sim.Config{}))
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Worker = false // orders stay pending: a long-poll waits its whole wait
	cfg.Addr = "127.0.0.1:0"
	cfg.Listen = lc
	cfg.Logger = testLogger(t)
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
	return a, a.URL()
}

// trickle is a request body that sends one byte a second, forever.
type trickle struct{ stop chan struct{} }

func (tr trickle) Read(p []byte) (int, error) {
	select {
	case <-time.After(time.Second):
	case <-tr.stop:
		return 0, io.EOF
	}
	p[0] = ' '
	return 1, nil
}

// postTrickled POSTs an order whose declared 1000-byte body trickles in,
// and returns the answer (nil when the connection was cut instead) and how
// long it took.
func postTrickled(t *testing.T, base, key string) (*http.Response, time.Duration) {
	return postTrickledTo(t, base, "/v1/orders", key)
}

func postTrickledTo(t *testing.T, base, path, key string) (*http.Response, time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	defer close(stop)
	req, _ := http.NewRequest("POST", path, trickle{stop})
	req.ContentLength = 1000
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start := time.Now()
	res, err := apitest.Client(t, base).Do(req)
	if err != nil {
		return nil, time.Since(start)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res, time.Since(start)
}

func TestTrickledBodyIsCutOffAtTheReadTimeout(t *testing.T) {
	t.Parallel()
	_, base := listening(t, listen.Config{ReadTimeout: time.Second})
	res, took := postTrickled(t, base, apiKey)
	// 1000 bytes at one a second would take 17 minutes.
	if took > 5*time.Second {
		t.Fatalf("a trickled body held the request %s, want it cut off after the 1s read timeout", took)
	}
	if res != nil && res.StatusCode >= 500 {
		t.Fatalf("a trickled body answered %d, want a 4xx or the connection closed", res.StatusCode)
	}
}

func TestUnauthenticatedTricklerIsRefusedWithoutReadingTheBody(t *testing.T) {
	t.Parallel()
	// A read timeout far above the bound: the refusal must not wait for it.
	_, base := listening(t, listen.Config{ReadTimeout: 30 * time.Second})
	for _, path := range []string{"/v1/orders", "/admin/api/deliveries/acme/dlv_x/redeliver"} {
		for _, key := range []string{"", "not-a-key-0123456789abcdef"} {
			res, took := postTrickledTo(t, base, path, key)
			if res == nil || res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s, key %q: answer %v, want 401", path, key, res)
			}
			if took > 3*time.Second {
				t.Fatalf("%s, key %q: 401 after %s, want it before the body", path, key, took)
			}
		}
	}

	// The connection is closed after the 401, not held until the read
	// timeout while the server reads the rest of the body.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("answer %d, want 401", res.StatusCode)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the 401 the connection gave %v, want it closed (EOF) well before the 30s read timeout", err)
	}
}

func TestLongPollOutlastsTheReadAndWriteTimeouts(t *testing.T) {
	t.Parallel()
	_, base := listening(t, listen.Config{ReadTimeout: time.Second, WriteTimeout: time.Second, ReadHeaderTimeout: time.Second})
	c := apitest.Client(t, base)
	req, _ := http.NewRequest("POST", "/v1/orders", strings.NewReader(`{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market"}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("place: %d", res.StatusCode)
	}
	// No worker: the order stays pending, the long-poll waits its 3s, three
	// times the read and write timeouts.
	req, _ = http.NewRequest("GET", res.Header.Get("Location")+"?wait=3s", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	start := time.Now()
	res, err = c.Do(req)
	if err != nil {
		t.Fatalf("a 3s long-poll behind 1s read and write timeouts: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("a 3s long-poll behind 1s read and write timeouts answered %d, want 200", res.StatusCode)
	}
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Fatalf("the long-poll answered after %s, want its whole 3s wait", took)
	}
}

func TestPerPeerCapRefusesTheExtraConnection(t *testing.T) {
	t.Parallel()
	_, base := listening(t, listen.Config{MaxConnsPerIP: 2})
	addr := strings.TrimPrefix(base, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first, second := dial(), dial()
	// Both are accepted: each answers a request.
	for i, c := range []net.Conn{first, second} {
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("connection %d within the cap: %v %v", i+1, res, err)
		}
	}
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := third.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a third connection from the same address: read gave %v, want it closed", err)
	}
	// Once one closes, a new connection is accepted.
	first.Close()
	var ok bool
	for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); {
		c := dial()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		ok = err == nil && res.StatusCode == http.StatusOK
		c.Close()
	}
	if !ok {
		t.Fatal("no connection accepted after one of the two closed")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestEveryListenerCutsSlowHeaders: the API, the metrics listener and the
// simulator all close a connection whose headers never end.
func TestEveryListenerCutsSlowHeaders(t *testing.T) {
	t.Parallel()
	lc := listen.Config{ReadHeaderTimeout: time.Second}
	rdb := redistest.Shared(t).NewClient(t)
	simSrv, err := sim.New(sim.Config{}).StartWith("127.0.0.1:0", lc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { simSrv.Shutdown(context.Background()) })
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Addr, cfg.MetricsAddr, cfg.Listen, cfg.Logger = "127.0.0.1:0", "127.0.0.1:0", lc, testLogger(t)
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
	for name, base := range map[string]string{"api": a.URL(), "metrics": a.MetricsURL(), "simulator": simSrv.URL} {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // no end of headers
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		io.Copy(io.Discard, c) // until the server closes (it may answer 408 first)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: a connection with unfinished headers stayed open %s, want it closed after the 1s read-header timeout", name, took)
		}
	}
}
