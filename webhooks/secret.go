package webhooks

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

const (
	// SecretPrefix starts the text form of every Secret: "whsec_" followed by
	// the key in standard base64 with padding.
	SecretPrefix = "whsec_"

	// SecretSize is the length in bytes of the keys that NewSecret makes.
	SecretSize = 32

	// MinSecretSize is the shortest key, in bytes, that ParseSecret accepts:
	// the lower bound of the Standard Webhooks specification (192 bits). The
	// specification's upper bound, 64 bytes, is not enforced, as the
	// Standard Webhooks libraries do not enforce it; HMAC hashes longer keys.
	MinSecretSize = 24
)

// redacted is what every textual view of a Secret shows, except String.
const redacted = "REDACTED"

// ErrInvalidSecret is returned, wrapped, by ParseSecret for text that is not a
// usable secret, and by Verify when given the zero Secret.
var ErrInvalidSecret = errors.New("webhooks: invalid secret")

// Secret is an endpoint's signing key, shared with its receiver. The zero
// Secret holds no key: Sign skips it and Verify rejects it.
//
// Secret keeps its key out of logs and error messages: fmt's verbs (%v, %+v,
// %#v, %s, …) and log/slog print REDACTED. Only String returns the key, in
// its "whsec_…" form, for the moments it must be shown or stored. Secret has
// no JSON or text marshaling: store String's result and read it back with
// ParseSecret. Compare Secrets with Equal, which takes constant time.
type Secret struct {
	// key holds the key bytes, in a string so that nobody can change them.
	// It is a pointer because fmt, when it walks a struct that holds a
	// Secret in an unexported field (where it cannot call Format), prints a
	// pointer to a string as an address, even under a bad verb; a pointer to
	// a struct or a slice it would print in full.
	key *string
	// asym marks an ed25519 signing key (scheme v1a): key holds the
	// 64-byte private key.
	asym bool
}

// NewSecret returns a Secret holding SecretSize random bytes from crypto/rand.
func NewSecret() (Secret, error) {
	b := make([]byte, SecretSize)
	if _, err := rand.Read(b); err != nil {
		return Secret{}, fmt.Errorf("webhooks: generate secret: %w", err)
	}
	key := string(b)
	return Secret{key: &key}, nil
}

// ParseSecret reads a secret in its "whsec_<base64>" form. Like the Standard
// Webhooks libraries, it also takes the bare base64 text without the prefix.
// Surrounding white space is ignored. It rejects empty text, text that is not
// standard base64, and keys shorter than MinSecretSize bytes; its errors wrap
// ErrInvalidSecret and never quote the input.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, SecretPrefix)
	if s == "" {
		return Secret{}, fmt.Errorf("%w: empty", ErrInvalidSecret)
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: not standard base64 after %q: %w", ErrInvalidSecret, SecretPrefix, err)
	}
	if len(key) < MinSecretSize {
		return Secret{}, fmt.Errorf("%w: key is %d bytes, want at least %d", ErrInvalidSecret, len(key), MinSecretSize)
	}
	raw := string(key)
	return Secret{key: &raw}, nil
}

// MustParseSecret is like ParseSecret but panics on error. It is meant for
// tests and examples with constant secrets.
func MustParseSecret(s string) Secret {
	secret, err := ParseSecret(s)
	if err != nil {
		panic(err)
	}
	return secret
}

// String returns the secret in full, as "whsec_" followed by the key in
// standard base64 with padding, or "" for the zero Secret. It is the only
// method that reveals the key: call it to show the secret once to its owner
// or to store it, never to log it.
func (s Secret) String() string {
	if s.key == nil {
		return ""
	}
	if s.asym {
		return SigningKeyPrefix + base64.StdEncoding.EncodeToString([]byte(*s.key))
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString([]byte(*s.key))
}

// IsZero reports whether s is the zero Secret, which holds no key.
func (s Secret) IsZero() bool { return s.key == nil }

// Equal reports whether s and other hold the same key, in time that depends
// only on the keys' lengths.
func (s Secret) Equal(other Secret) bool {
	if s.key == nil || other.key == nil {
		return s.key == other.key
	}
	if s.asym != other.asym {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(*s.key), []byte(*other.key)) == 1
}

// LogValue implements slog.LogValuer: log/slog prints REDACTED.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Format implements fmt.Formatter: every verb prints REDACTED, and %#v
// prints what GoString returns.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	_, _ = io.WriteString(f, redacted)
}

// GoString implements fmt.GoStringer without revealing the key.
func (s Secret) GoString() string { return "webhooks.Secret{" + redacted + "}" }

// raw returns the key bytes, or "" for the zero Secret.
func (s Secret) raw() string {
	if s.key == nil {
		return ""
	}
	return *s.key
}
