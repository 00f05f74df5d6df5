package apikeys_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	redistest.Shutdown()
	os.Exit(code)
}

func newStore(t *testing.T) *apikeys.Store {
	t.Helper()
	return apikeys.NewStore(redistest.Shared(t).NewClient(t), apikeys.Config{})
}

func TestCreateLookupRevoke(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	k, secret, err := s.Create(ctx, apikeys.CreateParams{Tenant: "acme", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret.Reveal(), apikeys.SecretPrefix) || len(secret.Reveal()) != len(apikeys.SecretPrefix)+43 {
		t.Errorf("secret %q: want %s and 43 base62 characters", secret.Reveal(), apikeys.SecretPrefix)
	}
	if !strings.HasPrefix(secret.Reveal(), k.Prefix) || !strings.HasPrefix(k.ID, "key_") {
		t.Errorf("key %+v does not match secret", k)
	}
	got, err := s.Lookup(ctx, apikeys.Hash(secret.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, got); diff != "" {
		t.Errorf("Lookup (-created +looked up):\n%s", diff)
	}
	if _, err := s.Lookup(ctx, apikeys.Hash(secret.Reveal()+"x")); !errors.Is(err, apikeys.ErrNotFound) {
		t.Errorf("Lookup of another secret: %v, want ErrNotFound", err)
	}

	used := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.Touch(ctx, k, used); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Lookup(ctx, k.Hash)
	if !got.LastUsedAt.Equal(used) {
		t.Errorf("last used %v, want %v", got.LastUsedAt, used)
	}

	if err := s.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, k.Hash); !errors.Is(err, apikeys.ErrNotFound) {
		t.Errorf("Lookup after revoke: %v, want ErrNotFound", err)
	}
	if err := s.Revoke(ctx, k.ID); !errors.Is(err, apikeys.ErrNotFound) {
		t.Errorf("second Revoke: %v, want ErrNotFound", err)
	}
	// A touch racing the revoke must not bring the key back.
	if err := s.Touch(ctx, k, used); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, k.Hash); !errors.Is(err, apikeys.ErrNotFound) {
		t.Errorf("Lookup after revoke and touch: %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := apikeys.NewStore(redistest.Shared(t).NewClient(t), apikeys.Config{Now: func() time.Time {
		now = now.Add(time.Second)
		return now
	}})
	ctx := t.Context()
	var want []*apikeys.Key
	for i, p := range []apikeys.CreateParams{{Tenant: "acme", Name: "one"}, {Tenant: "globex"}, {Tenant: "acme", Name: "ops", Admin: true}} {
		k, _, err := s.Create(ctx, p)
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		want = append(want, k)
	}
	all, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("List all (-want +got):\n%s", diff)
	}
	acme, err := s.List(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*apikeys.Key{want[0], want[2]}, acme); diff != "" {
		t.Errorf("List acme (-want +got):\n%s", diff)
	}
	if err := s.Revoke(ctx, want[0].ID); err != nil {
		t.Fatal(err)
	}
	acme, _ = s.List(ctx, "acme")
	if diff := cmp.Diff([]*apikeys.Key{want[2]}, acme, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("List acme after revoke (-want +got):\n%s", diff)
	}
	none, err := s.List(ctx, "initech")
	if err != nil || none == nil || len(none) != 0 {
		t.Errorf("List of a tenant without keys: %v, %v; want an empty list", none, err)
	}
}

func TestCreateInvalid(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, p := range []apikeys.CreateParams{
		{Tenant: ""},
		{Tenant: "Acme"},
		{Tenant: strings.Repeat("a", 65)},
		{Tenant: "acme", Name: strings.Repeat("n", 101)},
		{Tenant: "acme", Name: "line\nbreak"},
	} {
		if _, _, err := s.Create(t.Context(), p); !errors.Is(err, apikeys.ErrInvalid) {
			t.Errorf("Create(%+v): %v, want ErrInvalid", p, err)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	t.Parallel()
	s, err := apikeys.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x"} {
		got := fmt.Sprintf(f, s)
		if strings.Contains(got, s.Reveal()[len(apikeys.SecretPrefix):]) || (f != "%x" && !strings.Contains(got, "REDACTED")) {
			t.Errorf("Sprintf(%s) = %q shows the secret", f, got)
		}
	}
	if v := s.LogValue(); v.Kind() != slog.KindString || v.String() != "REDACTED" {
		t.Errorf("LogValue = %v", v)
	}
	other, _ := apikeys.NewSecret()
	if other == s {
		t.Error("two secrets are equal")
	}
	if !apikeys.Equal(apikeys.Hash(s.Reveal()), apikeys.Hash(s.Reveal())) || apikeys.Equal(apikeys.Hash(s.Reveal()), apikeys.Hash(other.Reveal())) {
		t.Error("Equal is wrong")
	}
}
