package webhooks

import (
	"errors"
	"testing"
)

// The dialer's Control hook is the last line: it checks the address the
// socket is about to connect to, whatever resolved it.
func TestGuardControlChecksTheConnectAddress(t *testing.T) {
	t.Parallel()
	strict := NewGuard(GuardConfig{AllowHTTP: true})
	dev := NewGuard(GuardConfig{AllowHTTP: true, AllowPrivate: true})
	for _, tt := range []struct {
		guard   *Guard
		address string
		refused bool
	}{
		{strict, "93.184.216.34:443", false},
		{strict, "127.0.0.1:8080", true},
		{strict, "[::1]:8080", true},
		{strict, "[::ffff:10.0.0.1]:80", true},
		{strict, "169.254.169.254:80", true},
		{strict, "not an address", true},
		{dev, "127.0.0.1:8080", false},
		{dev, "169.254.169.254:80", true},
		{dev, "[fe80::1%eth0]:80", true},
	} {
		err := tt.guard.control("tcp", tt.address, nil)
		if got := errors.Is(err, ErrURLNotAllowed); got != tt.refused {
			t.Errorf("control(%q) = %v, want refused=%v", tt.address, err, tt.refused)
		}
	}
}
