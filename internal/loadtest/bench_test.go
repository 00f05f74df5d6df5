package loadtest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/server"
)

// BenchmarkGinNoop is the floor of the accept path: the same request to a
// gin handler that does nothing. Allocations count client and server.
func BenchmarkGinNoop(b *testing.B) {
	srv := httptest.NewServer(newGinNoop())
	c := newHTTPClient(64)
	b.Cleanup(func() { c.CloseIdleConnections(); srv.Close() })
	p := poster{c: c, url: srv.URL + "/v1/orders"}
	benchPost(b, p)
}

// BenchmarkAccept posts orders to the API (no worker) on real Redis: store
// the order, enqueue its task, answer 202. Allocations count client and
// server.
func BenchmarkAccept(b *testing.B) {
	rdb := redistest.Shared(b).NewClient(b)
	a, err := app.New(app.Config{
		Redis: rdb, API: true,
		Server: server.Config{APIKeys: apiKeys()},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background(), false); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	c := newHTTPClient(64)
	b.Cleanup(func() {
		c.CloseIdleConnections()
		srv.Close()
		if err := a.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	})
	benchPost(b, poster{c: c, url: srv.URL + "/v1/orders"})
}

func benchPost(b *testing.B, p poster) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.post(context.Background(), apiKey, orderBody); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
