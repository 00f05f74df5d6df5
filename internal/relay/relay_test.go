package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateRoundTripAndPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	if s, err := LoadState(path); err != nil || s != (State{}) {
		t.Fatalf("missing file: %+v, %v; want the zero state", s, err)
	}
	want := State{Cursor: "1733450000000-3", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="}
	if err := SaveState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(path)
	if err != nil || got != want {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (%v), want 0600: it holds the secret", fi.Mode().Perm(), err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a corrupt state file: %v, want an error naming it", err)
	}
}

func TestDefaultStatePathPerAPIAndKey(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	a, err := DefaultStatePath("http://localhost:8080", "key-a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DefaultStatePath("http://localhost:8080/", "key-a")
	c, _ := DefaultStatePath("http://localhost:8080", "key-b")
	if a != b || a == c {
		t.Fatalf("paths %s %s %s: want one per API (trailing slash aside) and key", a, b, c)
	}
	if strings.Contains(a, "key-a") {
		t.Fatalf("the key is in the path %s", a)
	}
}
