package webhooks

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Signature schemes an endpoint can choose.
const (
	// SchemeV1 signs with HMAC-SHA256 under a shared secret ("whsec_…"):
	// entries "v1,<base64>".
	SchemeV1 = "v1"
	// SchemeV1a signs with ed25519 (Standard Webhooks' asymmetric scheme):
	// entries "v1a,<base64 signature>", checked with the public key
	// ("whpk_…"); the private key ("whsk_…") never leaves asyncgate.
	SchemeV1a = "v1a"
)

const (
	// SigningKeyPrefix starts the text form of an ed25519 private key:
	// "whsk_" and the base64 of the 64-byte private key (seed and public key).
	SigningKeyPrefix = "whsk_"
	// PublicKeyPrefix starts the text form of a PublicKey: "whpk_" and the
	// base64 of the 32-byte ed25519 public key.
	PublicKeyPrefix = "whpk_"

	asymVersion = "v1a"
	// encodedEdSize is the length of a base64 ed25519 signature.
	encodedEdSize = 88 // base64.StdEncoding.EncodedLen(ed25519.SignatureSize)
)

// ErrInvalidPublicKey is returned, wrapped, by ParsePublicKey for text that is
// not an ed25519 public key, and by VerifyPublicKey for the zero PublicKey.
var ErrInvalidPublicKey = errors.New("webhooks: invalid public key")

// PublicKey is the public half of a v1a endpoint's key pair: what its
// receivers verify signatures with. It is not secret.
type PublicKey struct {
	key ed25519.PublicKey
}

// ParsePublicKey reads a public key in its "whpk_<base64>" form (or the bare
// base64 text); surrounding white space is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), PublicKeyPrefix)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: not standard base64 after %q", ErrInvalidPublicKey, PublicKeyPrefix)
	}
	if len(b) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("%w: key is %d bytes, want %d", ErrInvalidPublicKey, len(b), ed25519.PublicKeySize)
	}
	return PublicKey{key: b}, nil
}

// String returns "whpk_" and the key in standard base64, or "" for the zero
// PublicKey.
func (p PublicKey) String() string {
	if p.key == nil {
		return ""
	}
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(p.key)
}

// IsZero reports whether p holds no key.
func (p PublicKey) IsZero() bool { return p.key == nil }

// NewSigningKey returns a Secret holding a new ed25519 private key: Sign
// signs with it in the v1a scheme, and PublicKey gives its public half.
func NewSigningKey() (Secret, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Secret{}, fmt.Errorf("webhooks: generate signing key: %w", err)
	}
	key := string(priv)
	return Secret{key: &key, asym: true}, nil
}

// SigningKeyFromSeed returns the v1a Secret of the ed25519 key made from
// seed (ed25519.SeedSize bytes), for tests and fixed keys.
func SigningKeyFromSeed(seed []byte) (Secret, error) {
	if len(seed) != ed25519.SeedSize {
		return Secret{}, fmt.Errorf("%w: seed is %d bytes, want %d", ErrInvalidSecret, len(seed), ed25519.SeedSize)
	}
	key := string(ed25519.NewKeyFromSeed(seed))
	return Secret{key: &key, asym: true}, nil
}

// parseSigningKey reads "whsk_<base64>": a 64-byte private key or its
// 32-byte seed.
func parseSigningKey(s string) (Secret, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SigningKeyPrefix))
	if err != nil {
		return Secret{}, fmt.Errorf("%w: not standard base64 after %q", ErrInvalidSecret, SigningKeyPrefix)
	}
	switch len(b) {
	case ed25519.SeedSize:
		return SigningKeyFromSeed(b)
	case ed25519.PrivateKeySize:
		key := string(ed25519.NewKeyFromSeed(b[:ed25519.SeedSize]))
		if key != string(b) {
			return Secret{}, fmt.Errorf("%w: public half does not match the seed", ErrInvalidSecret)
		}
		return Secret{key: &key, asym: true}, nil
	}
	return Secret{}, fmt.Errorf("%w: key is %d bytes, want %d or %d", ErrInvalidSecret, len(b), ed25519.SeedSize, ed25519.PrivateKeySize)
}

// parseStoredSecret reads a key as the store keeps it: a "whsec_" secret
// or a "whsk_" signing key.
func parseStoredSecret(s string) (Secret, error) {
	if strings.HasPrefix(s, SigningKeyPrefix) {
		return parseSigningKey(s)
	}
	return ParseSecret(s)
}

// Scheme is the signature scheme s signs in: SchemeV1a for a signing key,
// SchemeV1 otherwise.
func (s Secret) Scheme() string {
	if s.asym {
		return SchemeV1a
	}
	return SchemeV1
}

// PublicKey is the public half of a v1a signing key; the zero PublicKey for
// a v1 secret.
func (s Secret) PublicKey() PublicKey {
	if !s.asym || s.key == nil {
		return PublicKey{}
	}
	return PublicKey{key: ed25519.PrivateKey(*s.key).Public().(ed25519.PublicKey)}
}

// newSecretOf makes a new key of the given scheme.
func newSecretOf(scheme string) (Secret, error) {
	if scheme == SchemeV1a {
		return NewSigningKey()
	}
	return NewSecret()
}

// signedContent is "msgID.ts.body", what both schemes sign.
func signedContent(msgID string, ts int64, body []byte) []byte {
	b := make([]byte, 0, len(msgID)+22+len(body))
	b = append(b, msgID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	return append(b, body...)
}

// asymSignature returns the base64 ed25519 signature of "msgID.ts.body".
func asymSignature(priv string, msgID string, ts int64, body []byte) [encodedEdSize]byte {
	sig := ed25519.Sign(ed25519.PrivateKey(priv), signedContent(msgID, ts, body))
	var enc [encodedEdSize]byte
	base64.StdEncoding.Encode(enc[:], sig)
	return enc
}

// VerifyPublicKey checks a received v1a webhook against the endpoint's public
// key, with the system clock; see VerifyPublicKeyAt.
func VerifyPublicKey(pub PublicKey, header http.Header, body []byte, tolerance time.Duration) error {
	return VerifyPublicKeyAt(pub, header, body, tolerance, time.Now())
}

// VerifyPublicKeyAt is VerifyAt for the v1a scheme: it checks the same
// headers and timestamp, then accepts the message if any "v1a," entry of
// webhook-signature is a valid ed25519 signature of "id.timestamp.body"
// under pub; entries of other versions are ignored. It returns the errors
// VerifyAt does, or one wrapping ErrInvalidPublicKey for the zero PublicKey.
// It never panics.
func VerifyPublicKeyAt(pub PublicKey, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if pub.IsZero() {
		return fmt.Errorf("%w: zero PublicKey", ErrInvalidPublicKey)
	}
	msgID, ts, err := checkHeaders(header, tolerance, now)
	if err != nil {
		return err
	}
	var msg []byte
	var sig [ed25519.SignatureSize + 2]byte // room for unpadded input
	for _, key := range [...]string{canonicalSignature, HeaderSignature} {
		for _, value := range header[key] {
			for entry := range strings.SplitSeq(value, " ") {
				version, text, ok := strings.Cut(entry, ",")
				if !ok || version != asymVersion || len(text) != encodedEdSize {
					continue
				}
				if n, err := base64.StdEncoding.Decode(sig[:], []byte(text)); err != nil || n != ed25519.SignatureSize {
					continue
				}
				if msg == nil {
					msg = signedContent(msgID, ts, body)
				}
				if ed25519.Verify(pub.key, msg, sig[:ed25519.SignatureSize]) {
					return nil
				}
			}
		}
	}
	return ErrInvalidSignature
}
