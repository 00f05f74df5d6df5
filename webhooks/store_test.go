package webhooks_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/webhooks"
)

func TestEndpointLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	s := b.store

	ep, secret, err := s.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{
		URL: "http://127.0.0.1:9/in", Events: []string{"order.failed", "order.executed", "order.failed"}, Description: "ops",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !webhooks.ValidEndpointID(ep.ID) || ep.Status != webhooks.EndpointEnabled {
		t.Fatalf("new endpoint = %+v", ep)
	}
	if diff := cmp.Diff([]string{"order.executed", "order.failed"}, ep.Events); diff != "" {
		t.Errorf("events, sorted and deduplicated (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(secret.String(), "whsec_") || len(secret.String()) != len("whsec_")+44 {
		t.Errorf("secret %q is not whsec_ and 32 bytes of base64", secret.String())
	}
	got, err := s.Endpoint(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ep, got); diff != "" {
		t.Errorf("read back (-created +read):\n%s", diff)
	}

	all, _, err := s.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "http://127.0.0.1:9/all"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"order.cancelled", "order.executed", "order.failed", "order.rejected"}, all.Events); diff != "" {
		t.Errorf("default subscription (-want +got):\n%s", diff)
	}
	list, err := s.Endpoints(ctx, "acme")
	if err != nil || len(list) != 2 || list[0].ID != ep.ID || list[1].ID != all.ID {
		t.Fatalf("list = %v, %v; want both, oldest first", list, err)
	}

	// Rotation: the old secret signs on for the grace period.
	rotated, newSecret, err := s.RotateSecret(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if newSecret.Equal(secret) || rotated.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotation: new secret equal=%v, previous expires at %v", newSecret.Equal(secret), rotated.PreviousSecretExpiresAt)
	}
	if d := time.Until(*rotated.PreviousSecretExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("previous secret expires in %s, want the 24h grace", d)
	}

	disabled, err := s.DisableEndpoint(ctx, "acme", ep.ID, "")
	if err != nil || disabled.Status != webhooks.EndpointDisabled || disabled.DisabledReason != webhooks.ReasonDisabledByUser || disabled.DisabledAt == nil {
		t.Fatalf("disable = %+v, %v", disabled, err)
	}
	enabled, held, err := s.EnableEndpoint(ctx, "acme", ep.ID)
	if err != nil || enabled.Status != webhooks.EndpointEnabled || enabled.DisabledReason != "" || len(held) != 0 {
		t.Fatalf("enable = %+v, held %v, %v", enabled, held, err)
	}

	if err := s.DeleteEndpoint(ctx, "acme", ep.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Endpoint(ctx, "acme", ep.ID); !errors.Is(err, webhooks.ErrEndpointNotFound) {
		t.Fatalf("read after delete = %v, want ErrEndpointNotFound", err)
	}
	if err := s.DeleteEndpoint(ctx, "acme", ep.ID); !errors.Is(err, webhooks.ErrEndpointNotFound) {
		t.Fatalf("second delete = %v, want ErrEndpointNotFound", err)
	}
}

func TestEndpointTenantIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	s := b.store
	ep, _ := b.endpoint(t, "acme", "http://127.0.0.1:9/in")
	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)

	notFound := func(what string, err error, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s by another tenant = %v, want %v", what, err, want)
		}
	}
	_, err := s.Endpoint(ctx, "globex", ep.ID)
	notFound("get", err, webhooks.ErrEndpointNotFound)
	_, _, err = s.RotateSecret(ctx, "globex", ep.ID)
	notFound("rotate", err, webhooks.ErrEndpointNotFound)
	_, err = s.DisableEndpoint(ctx, "globex", ep.ID, "")
	notFound("disable", err, webhooks.ErrEndpointNotFound)
	_, _, err = s.EnableEndpoint(ctx, "globex", ep.ID)
	notFound("enable", err, webhooks.ErrEndpointNotFound)
	notFound("delete", s.DeleteEndpoint(ctx, "globex", ep.ID), webhooks.ErrEndpointNotFound)
	_, _, err = s.Deliveries(ctx, "globex", ep.ID, webhooks.DeliveryListParams{})
	notFound("list deliveries", err, webhooks.ErrEndpointNotFound)
	_, err = s.Delivery(ctx, "globex", r.DeliveryID)
	notFound("get delivery", err, webhooks.ErrDeliveryNotFound)
	_, err = s.PrepareRedelivery(ctx, "globex", r.DeliveryID)
	notFound("redeliver", err, webhooks.ErrDeliveryNotFound)
	if list, err := s.Endpoints(ctx, "globex"); err != nil || len(list) != 0 {
		t.Errorf("another tenant's list = %v, %v; want empty", list, err)
	}
	// And the owner still has it all.
	if _, err := s.Endpoint(ctx, "acme", ep.ID); err != nil {
		t.Errorf("owner's get: %v", err)
	}
}

func TestCreateEndpointRefusesBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, func(o *options) {
		o.store.MaxEndpoints = 1
		o.store.Guard = webhooks.NewGuard(webhooks.GuardConfig{})
	})
	for _, tt := range []struct {
		name   string
		in     webhooks.EndpointInput
		fields []string
		err    error
	}{
		{name: "no url", in: webhooks.EndpointInput{}, fields: []string{"url"}},
		{name: "unknown event", in: webhooks.EndpointInput{URL: "https://93.184.216.34/", Events: []string{"order.created"}}, fields: []string{"events"}},
		{name: "long description", in: webhooks.EndpointInput{URL: "https://93.184.216.34/", Description: strings.Repeat("x", 300)}, fields: []string{"description"}},
		{name: "loopback", in: webhooks.EndpointInput{URL: "https://127.0.0.1/"}, err: webhooks.ErrURLNotAllowed},
		{name: "plain http", in: webhooks.EndpointInput{URL: "http://93.184.216.34/"}, err: webhooks.ErrURLNotAllowed},
		{name: "not a URL", in: webhooks.EndpointInput{URL: "hooks"}, err: webhooks.ErrInvalidURL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := b.store.CreateEndpoint(ctx, "acme", tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			ve, ok := errors.AsType[*webhooks.ValidationError](err)
			if !ok {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			var fields []string
			for _, f := range ve.Fields {
				fields = append(fields, f.Field)
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := b.store.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "https://93.184.216.34/"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.store.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "https://93.184.216.34/2"}); !errors.Is(err, webhooks.ErrTooManyEndpoints) {
		t.Fatalf("one endpoint too many: %v, want ErrTooManyEndpoints", err)
	}
	list, _ := b.store.Endpoints(ctx, "acme")
	if len(list) != 1 {
		t.Fatalf("bad input stored endpoints: %d, want 1", len(list))
	}
}

func TestPublishIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	executed, _ := b.endpoint(t, "acme", "http://127.0.0.1:9/executed", webhooks.EventOrderExecuted)
	b.endpoint(t, "acme", "http://127.0.0.1:9/failed", webhooks.EventOrderFailed) // not subscribed
	disabled, _ := b.endpoint(t, "acme", "http://127.0.0.1:9/disabled")
	if _, err := b.store.DisableEndpoint(ctx, "acme", disabled.ID, ""); err != nil {
		t.Fatal(err)
	}
	b.endpoint(t, "globex", "http://127.0.0.1:9/other-tenant")

	ev, refs := b.publish(t, "acme", "http://127.0.0.1:9/callback")
	if len(refs) != 2 {
		t.Fatalf("deliveries to schedule = %+v, want the subscribed endpoint and the callback", refs)
	}
	targets := map[string]bool{}
	for _, r := range refs {
		targets[r.EndpointID] = true
		if r.EventID != ev.ID || r.Tenant != "acme" || !webhooks.ValidDeliveryID(r.DeliveryID) {
			t.Errorf("ref = %+v", r)
		}
	}
	if !targets[executed.ID] || !targets[""] {
		t.Errorf("targets = %v, want %s and the callback", targets, executed.ID)
	}
	held, _, err := b.store.Deliveries(ctx, "acme", disabled.ID, webhooks.DeliveryListParams{})
	if err != nil || len(held) != 1 || held[0].Status != webhooks.DeliveryHeld {
		t.Fatalf("the disabled endpoint's deliveries = %+v, %v; want one held", held, err)
	}

	// A retried fan-out, even after a new subscriber came: the same
	// deliveries, nothing new.
	b.endpoint(t, "acme", "http://127.0.0.1:9/late")
	again, err := b.store.Publish(ctx, "acme", ev, "http://127.0.0.1:9/callback")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(refs, again); diff != "" {
		t.Errorf("second publish (-first +second):\n%s", diff)
	}
	// Once delivered, a delivery is no longer returned to schedule.
	for _, r := range refs {
		if r.EndpointID == executed.ID {
			if err := b.store.DeleteEndpoint(ctx, "acme", executed.ID); err != nil {
				t.Fatal(err)
			}
			b.deliver(t, r) // ends failed: endpoint deleted
		}
	}
	again, err = b.store.Publish(ctx, "acme", ev, "")
	if err != nil || len(again) != 1 || again[0].EndpointID != "" {
		t.Fatalf("third publish = %+v, %v; want only the callback", again, err)
	}
}

func TestPublishRefusesHugeEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *options) { o.store.MaxEventBytes = 1024 })
	ev := &webhooks.Event{ID: webhooks.EventID("acme", "o", 2), Type: webhooks.EventOrderFailed, Data: []byte(`"` + strings.Repeat("x", 2000) + `"`)}
	if _, err := b.store.Publish(context.Background(), "acme", ev, ""); !errors.Is(err, webhooks.ErrEventTooLarge) {
		t.Fatalf("publish = %v, want ErrEventTooLarge", err)
	}
}

func TestEventIDIsStable(t *testing.T) {
	t.Parallel()
	a := webhooks.EventID("acme", "0190f1a2-7b3c-7d4e-8f90-123456789abc", 4)
	if a != webhooks.EventID("acme", "0190f1a2-7b3c-7d4e-8f90-123456789abc", 4) || !strings.HasPrefix(a, "evt_") || len(a) != 40 {
		t.Fatalf("EventID = %q, want a stable evt_<uuid>", a)
	}
	for _, other := range []string{
		webhooks.EventID("acme", "0190f1a2-7b3c-7d4e-8f90-123456789abc", 5),
		webhooks.EventID("globex", "0190f1a2-7b3c-7d4e-8f90-123456789abc", 4),
		webhooks.EventID("acme", "0190f1a2-7b3c-7d4e-8f90-123456789abd", 4),
	} {
		if other == a {
			t.Errorf("EventID collides: %s", a)
		}
	}
}

// TestPublishSeesEndpointChangesOfOtherProcesses: Publish works from its
// own copy of the tenant's subscriptions, which its script checks against
// the stored ones. Endpoints created, changed, disabled and deleted
// through another store (another process: this one's copy is out of date)
// are each found at the next publish.
func TestPublishSeesEndpointChangesOfOtherProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	other := webhooks.NewStore(b.rdb, webhooks.StoreConfig{Guard: devGuard()})
	targets := func(refs []webhooks.Ref) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.EndpointID)
		}
		slices.Sort(out)
		return out
	}
	first, _ := b.endpoint(t, "acme", "http://127.0.0.1:9/first")
	if _, refs := b.publish(t, "acme", ""); !slices.Equal(targets(refs), []string{first.ID}) {
		t.Fatalf("deliveries to %v, want %s", targets(refs), first.ID)
	}
	check := func(step string, want ...string) {
		t.Helper()
		slices.Sort(want)
		_, refs := b.publish(t, "acme", "")
		if got := targets(refs); !slices.Equal(got, want) {
			t.Fatalf("%s: deliveries to %v, want %v", step, got, want)
		}
	}

	second, _, err := other.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "http://127.0.0.1:9/second"})
	if err != nil {
		t.Fatal(err)
	}
	check("a second endpoint created elsewhere", first.ID, second.ID)

	failedOnly := []string{webhooks.EventOrderFailed}
	if _, _, err := other.UpdateEndpoint(ctx, "acme", first.ID, webhooks.EndpointPatch{Events: &failedOnly}); err != nil {
		t.Fatal(err)
	}
	check("the first endpoint no longer subscribed", second.ID)

	moved := "http://127.0.0.1:9/moved"
	if _, _, err := other.UpdateEndpoint(ctx, "acme", second.ID, webhooks.EndpointPatch{URL: &moved}); err != nil {
		t.Fatal(err)
	}
	_, refs := b.publish(t, "acme", "")
	if d := b.delivery(t, one(t, refs)); d.URL != moved {
		t.Fatalf("the delivery records the URL %q, want the new one %q", d.URL, moved)
	}

	if _, err := other.DisableEndpoint(ctx, "acme", second.ID, ""); err != nil {
		t.Fatal(err)
	}
	check("the second endpoint disabled (its delivery is held)")
	held, _, err := b.store.Deliveries(ctx, "acme", second.ID, webhooks.DeliveryListParams{Status: webhooks.DeliveryHeld})
	if err != nil || len(held) != 1 {
		t.Fatalf("held deliveries of the disabled endpoint: %d, %v; want 1", len(held), err)
	}
	if _, _, err := other.EnableEndpoint(ctx, "acme", second.ID); err != nil {
		t.Fatal(err)
	}
	check("enabled again", second.ID)

	if err := other.DeleteEndpoint(ctx, "acme", second.ID); err != nil {
		t.Fatal(err)
	}
	check("the second endpoint deleted")
	third, _, err := other.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: "http://127.0.0.1:9/third", Events: failedOnly})
	if err != nil {
		t.Fatal(err)
	}
	ev := &webhooks.Event{ID: webhooks.EventID("acme", "0190f1a2-7b3c-7d4e-8f90-000000000001", 3), Type: webhooks.EventOrderFailed, Data: []byte(`{}`)}
	refs, err = b.store.Publish(ctx, "acme", ev, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := targets(refs); !slices.Equal(got, []string{first.ID, third.ID}) {
		t.Fatalf("order.failed: deliveries to %v, want %s and %s", got, first.ID, third.ID)
	}
}
