package webhooks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/webhooks"
)

// BenchmarkFeed measures the event feed's two costs: storing an event for
// a tenant without endpoints (the saga's fast path, one script) and
// reading a page of 100 events (one XRANGE, one pipelined HGET).
func BenchmarkFeed(b *testing.B) {
	ctx := context.Background()
	rdb := redistest.Shared(b).NewClient(b)
	s := webhooks.NewStore(rdb, webhooks.StoreConfig{})
	data := []byte(`{"id":"0190f1a2-7b3c-7d4e-8f90-123456789abc","account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":10,"type":"market","status":"executed"}`)
	n := 0
	publish := func(tenant string) {
		n++
		id := fmt.Sprintf("o%d", n)
		ev := &webhooks.Event{ID: webhooks.EventID(tenant, id, 4), Type: webhooks.EventOrderExecuted, CreatedAt: time.Now(), Sequence: 4, Data: data}
		if _, err := s.PublishUnsubscribed(ctx, tenant, ev, "ag:{"+tenant+"}:outbox", id); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("publish-unsubscribed", func(b *testing.B) {
		for b.Loop() {
			publish("bench-pub")
		}
	})
	for range 100 {
		publish("bench-read")
	}
	b.Run("read-page-100", func(b *testing.B) {
		for b.Loop() {
			p, err := s.Feed(ctx, "bench-read", "", 100)
			if err != nil || len(p.Events) != 100 {
				b.Fatalf("%d events, %v", len(p.Events), err)
			}
		}
	})
}
