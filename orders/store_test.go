package orders_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.Shutdown()
	os.Exit(code)
}

func newStore(t *testing.T) *orders.Store {
	t.Helper()
	rdb := redistest.Shared(t).NewClient(t)
	redistest.CheckSlots(t, rdb) // every script and MULTI in one slot, as on a Redis Cluster
	return orders.NewStore(rdb, orders.StoreConfig{})
}

func newOrder(t *testing.T, s *orders.Store, tenant string, mut ...func(*orders.Order)) *orders.Order {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	o := &orders.Order{
		ID: uuid.Must(uuid.NewV7()).String(), Tenant: tenant, CreatedAt: now, Deadline: now.Add(15 * time.Minute),
		Request: orders.Request{AccountID: "acc-1", Symbol: "AAPL", Side: orders.Buy, Quantity: 10, Type: orders.Market,
			Metadata: map[string]string{"k": "v"}},
	}
	for _, f := range mut {
		f(o)
	}
	if _, err := s.Create(context.Background(), o); err != nil {
		t.Fatalf("create: %v", err)
	}
	return o
}

func TestLifecycleAndReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	o := newOrder(t, s, "acme")

	l, err := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	fill := &orders.Fill{ExecutionID: o.ID, Price: 101.5, Quantity: 10, FilledAt: time.Now().UTC().Truncate(time.Millisecond)}
	for _, c := range []orders.Change{{To: orders.Validated}, {To: orders.FundsReserved}, {To: orders.Executed, Fill: fill}} {
		if c.To == orders.Executed {
			if err := s.BeginExecute(ctx, l); err != nil {
				t.Fatalf("begin execute: %v", err)
			}
		}
		if err := s.Transition(ctx, l, c); err != nil {
			t.Fatalf("transition to %s: %v", c.To, err)
		}
	}
	got, err := s.Get(ctx, "acme", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != orders.Executed || got.Fill == nil || got.Fill.Price != 101.5 || got.Version != 4 {
		t.Fatalf("order after saga = %+v", got)
	}
	evs, err := s.Events(ctx, "acme", o.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []orders.EventType
	for i, e := range evs {
		types = append(types, e.Type)
		if e.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, e.Seq)
		}
	}
	want := []orders.EventType{"order.created", "order.validated", "order.funds_reserved", "order.executed"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Fatalf("event types (-want +got):\n%s", diff)
	}
	replayed, err := orders.Replay("acme", evs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, &replayed, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Fatalf("replayed order differs from stored (-stored +replayed):\n%s", diff)
	}
	// Terminal: the lease is refused and the order is no longer in flight.
	if _, err := s.Acquire(ctx, "acme", o.ID, time.Minute); !errors.Is(err, orders.ErrTerminal) {
		t.Fatalf("acquire terminal order: %v, want ErrTerminal", err)
	}
	ids, err := s.InFlight(ctx, "acme", time.Now().Add(time.Hour), 10)
	if err != nil || len(ids) != 0 {
		t.Fatalf("in flight = %v, %v; want none", ids, err)
	}
}

func TestTransitionRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	o := newOrder(t, s, "acme")
	l, err := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l, orders.Change{To: orders.Executed}); !errors.Is(err, orders.ErrInvalidTransition) {
		t.Fatalf("pending → executed: %v, want ErrInvalidTransition", err)
	}
	if err := s.BeginExecute(ctx, l); !errors.Is(err, orders.ErrInvalidTransition) {
		t.Fatalf("begin execute while pending: %v", err)
	}
	got, _ := s.Get(ctx, "acme", o.ID)
	if got.Status != orders.Pending || got.Version != 1 {
		t.Fatalf("refused transition changed the order: %+v", got)
	}
}

func TestStateMachine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		from, to orders.Status
		ok       bool
	}{
		{orders.Pending, orders.Validated, true},
		{orders.Validated, orders.FundsReserved, true},
		{orders.FundsReserved, orders.Executed, true},
		{orders.Validated, orders.Rejected, true},
		{orders.FundsReserved, orders.Rejected, false},
		{orders.FundsReserved, orders.Failed, true},
		{orders.Pending, orders.Cancelled, true},
		{orders.Executed, orders.Failed, false},
		{orders.Cancelled, orders.Pending, false},
		{orders.Pending, orders.FundsReserved, false},
	} {
		if got := orders.CanTransition(tt.from, tt.to); got != tt.ok {
			t.Errorf("CanTransition(%s, %s) = %v, want %v", tt.from, tt.to, got, tt.ok)
		}
	}
}

func TestFencing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := orders.NewStore(redistest.Shared(t).NewClient(t), orders.StoreConfig{Now: clock})
	o := newOrder(t, s, "acme")

	stale, err := s.Acquire(ctx, "acme", o.ID, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, "acme", o.ID, time.Second); !errors.Is(err, orders.ErrLeaseHeld) {
		t.Fatalf("second acquire while held: %v, want ErrLeaseHeld", err)
	}
	mu.Lock()
	now = now.Add(2 * time.Second) // the stale worker's lease runs out
	mu.Unlock()
	fresh, err := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatalf("acquire after expiry: %v", err)
	}
	if fresh.Token <= stale.Token {
		t.Fatalf("token did not grow: %d → %d", stale.Token, fresh.Token)
	}
	if err := s.Transition(ctx, stale, orders.Change{To: orders.Validated}); !errors.Is(err, orders.ErrFenced) {
		t.Fatalf("stale transition: %v, want ErrFenced", err)
	}
	if err := s.Transition(ctx, fresh, orders.Change{To: orders.Validated}); err != nil {
		t.Fatalf("fresh transition: %v", err)
	}
	if err := s.Release(ctx, stale); err != nil {
		t.Fatal(err)
	}
	// The stale release must not free the fresh lease.
	if _, err := s.Acquire(ctx, "acme", o.ID, time.Second); !errors.Is(err, orders.ErrLeaseHeld) {
		t.Fatalf("stale release freed the fresh lease: %v", err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)

	o := newOrder(t, s, "acme")
	if err := s.RequestCancel(ctx, "acme", o.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RequestCancel(ctx, "acme", o.ID); err != nil {
		t.Fatalf("second cancel must be idempotent: %v", err)
	}
	got, _ := s.Get(ctx, "acme", o.ID)
	if !got.CancelRequested || got.Version != 2 {
		t.Fatalf("after cancel request: %+v", got)
	}
	l, err := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l, orders.Change{To: orders.Validated}); err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, l, orders.Change{To: orders.FundsReserved}); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginExecute(ctx, l); !errors.Is(err, orders.ErrCompensate) {
		t.Fatalf("begin execute after cancel: %v, want ErrCompensate", err)
	}

	// Executing orders cannot be cancelled.
	o2 := newOrder(t, s, "acme")
	l2, _ := s.Acquire(ctx, "acme", o2.ID, time.Minute)
	s.Transition(ctx, l2, orders.Change{To: orders.Validated})
	s.Transition(ctx, l2, orders.Change{To: orders.FundsReserved})
	if err := s.BeginExecute(ctx, l2); err != nil {
		t.Fatal(err)
	}
	if err := s.RequestCancel(ctx, "acme", o2.ID); !errors.Is(err, orders.ErrTooLate) {
		t.Fatalf("cancel while executing: %v, want ErrTooLate", err)
	}
	if err := s.RequestCancel(ctx, "acme", "nope"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}
}

func TestTenantIsolationAndClientOrderID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	o := newOrder(t, s, "acme", func(o *orders.Order) { o.ClientOrderID = "c-1" })
	if _, err := s.Get(ctx, "globex", o.ID); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("other tenant reads order: %v", err)
	}
	dup := *o
	dup.ID = uuid.Must(uuid.NewV7()).String()
	existing, err := s.Create(ctx, &dup)
	if !errors.Is(err, orders.ErrDuplicateClientOrderID) || existing.ID != o.ID {
		t.Fatalf("duplicate client_order_id: %v, %+v", err, existing)
	}
	// Another tenant may reuse it.
	newOrder(t, s, "globex", func(o *orders.Order) { o.ClientOrderID = "c-1" })
}

func TestListPaginationAndFilter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var ids []string
	for range 7 {
		ids = append(ids, newOrder(t, s, "acme").ID)
	}
	newOrder(t, s, "globex")
	l, _ := s.Acquire(ctx, "acme", ids[2], time.Minute)
	if err := s.Transition(ctx, l, orders.Change{To: orders.Rejected, Reason: "risk"}); err != nil {
		t.Fatal(err)
	}

	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, next, err := s.List(ctx, "acme", orders.ListParams{Limit: 3, After: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page {
			seen = append(seen, o.ID)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	var want []string
	for i := len(ids) - 1; i >= 0; i-- {
		want = append(want, ids[i])
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Fatalf("list newest first (-want +got):\n%s", diff)
	}
	rej, _, err := s.List(ctx, "acme", orders.ListParams{Status: orders.Rejected})
	if err != nil || len(rej) != 1 || rej[0].ID != ids[2] || rej[0].Reason != "risk" {
		t.Fatalf("status filter = %v, %v", rej, err)
	}
	pend, _, _ := s.List(ctx, "acme", orders.ListParams{Status: orders.Pending, Limit: 100})
	if len(pend) != 6 {
		t.Fatalf("pending = %d, want 6", len(pend))
	}
}

func TestWaitForChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := orders.NewStore(redistest.Shared(t).NewClient(t), orders.StoreConfig{PollInterval: time.Hour}) // only the announcement can wake a waiter in time
	w := s.Watch(ctx)
	defer w.Close()
	o := newOrder(t, s, "acme")

	got := make(chan *orders.Order, 1)
	ready := make(chan struct{})
	go func() {
		ch, cancel := w.Subscribe("acme", o.ID) // proves the subscription is live before we change
		defer cancel()
		close(ready)
		<-ch
		cur, _ := s.Get(ctx, "acme", o.ID)
		got <- cur
	}()
	<-ready
	// A long poll started now returns once the status changes, long before its 30 s wait.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res := make(chan *orders.Order, 1)
	go func() {
		o, err := s.WaitForChange(wctx, "acme", o.ID, orders.Pending)
		if err != nil {
			t.Error(err)
		}
		res <- o
	}()
	l, _ := s.Acquire(ctx, "acme", o.ID, time.Minute)
	if err := s.Transition(ctx, l, orders.Change{To: orders.Validated}); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-res:
		if o.Status != orders.Validated {
			t.Fatalf("wait returned status %s", o.Status)
		}
	case <-wctx.Done():
		t.Fatal("long poll did not return on change")
	}
	if cur := <-got; cur.Status != orders.Validated {
		t.Fatalf("subscriber saw %s", cur.Status)
	}
}

func TestRequestValidate(t *testing.T) {
	t.Parallel()
	p := func(f float64) *float64 { return &f }
	for _, tt := range []struct {
		name   string
		req    orders.Request
		fields []string
	}{
		{"valid market", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, Type: "market"}, nil},
		{"valid limit", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "sell", Quantity: 1, Type: "limit", LimitPrice: p(10)}, nil},
		{"empty", orders.Request{}, []string{"account_id", "symbol", "side", "quantity", "type"}},
		{"zero qty", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: 0, Type: "market"}, []string{"quantity"}},
		{"negative qty", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: -1, Type: "market"}, []string{"quantity"}},
		{"limit without price", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, Type: "limit"}, []string{"limit_price"}},
		{"market with price", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, Type: "market", LimitPrice: p(1)}, []string{"limit_price"}},
		{"bad side", orders.Request{AccountID: "a", Symbol: "AAPL", Side: "hold", Quantity: 1, Type: "market"}, []string{"side"}},
		{"bad symbol", orders.Request{AccountID: "a", Symbol: "aapl<script>", Side: "buy", Quantity: 1, Type: "market"}, []string{"symbol"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			var got []string
			var ve *orders.ValidationError
			if errors.As(err, &ve) {
				for _, f := range ve.Fields {
					got = append(got, f.Field)
				}
			} else if err != nil {
				t.Fatalf("unexpected error type %T", err)
			}
			if diff := cmp.Diff(tt.fields, got); diff != "" {
				t.Fatalf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkCreate(b *testing.B) {
	s := orders.NewStore(redistest.Shared(b).NewClient(b), orders.StoreConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		now := time.Now()
		o := &orders.Order{ID: fmt.Sprintf("%020d", i), Tenant: "acme", CreatedAt: now, Deadline: now.Add(time.Minute),
			Request: orders.Request{AccountID: "a", Symbol: "AAPL", Side: "buy", Quantity: 1, Type: "market"}}
		if _, err := s.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
}
