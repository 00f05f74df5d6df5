package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a signed webhook, as the Standard Webhooks specification
// spells them. HTTP header names are case-insensitive; http.Header stores
// them canonicalized ("Webhook-Id").
const (
	// HeaderID names the header with the message ID, which stays the same
	// across retries, so that receivers can drop duplicates.
	HeaderID = "webhook-id"
	// HeaderTimestamp names the header with the time of the attempt, in
	// Unix seconds.
	HeaderTimestamp = "webhook-timestamp"
	// HeaderSignature names the header with the space-separated signatures.
	HeaderSignature = "webhook-signature"
)

// Canonical forms of the header names, for direct http.Header lookups.
const (
	canonicalID        = "Webhook-Id"
	canonicalTimestamp = "Webhook-Timestamp"
	canonicalSignature = "Webhook-Signature"
)

// DefaultTolerance is how far a webhook's timestamp may be from the
// receiver's clock, either way, when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors returned, possibly wrapped, by Verify and VerifyAt. Test for them
// with errors.Is.
var (
	// ErrMissingHeaders means webhook-id, webhook-timestamp or
	// webhook-signature is absent or empty.
	ErrMissingHeaders = errors.New("webhooks: missing required headers")
	// ErrInvalidHeader means a header is present but malformed, such as a
	// webhook-timestamp that is not an integer number of seconds.
	ErrInvalidHeader = errors.New("webhooks: invalid header")
	// ErrTimestampTooOld means webhook-timestamp is further in the past than
	// the tolerance: a late or replayed message.
	ErrTimestampTooOld = errors.New("webhooks: timestamp too old")
	// ErrTimestampTooNew means webhook-timestamp is further in the future
	// than the tolerance.
	ErrTimestampTooNew = errors.New("webhooks: timestamp too new")
	// ErrInvalidSignature means no v1 signature in webhook-signature matches
	// the message under the secret.
	ErrInvalidSignature = errors.New("webhooks: no matching signature")
)

const (
	signatureVersion = "v1"
	// encodedMACSize is the length of a base64 HMAC-SHA256.
	encodedMACSize = 44 // base64.StdEncoding.EncodedLen(sha256.Size)
	// signatureSize is the length of one "v1,<base64>" entry.
	signatureSize = len(signatureVersion) + 1 + encodedMACSize
)

// Sign returns the value of the webhook-signature header for the message
// msgID, sent at ts (in whole Unix seconds), with the given body: for each
// secret, "v1," and the base64 HMAC-SHA256 of "msgID.ts.body" under the
// secret's key, separated by spaces. A v1a signing key (NewSigningKey) adds
// "v1a," and the base64 ed25519 signature of the same text instead. While a secret rotates, pass both the new
// and the old one, so that receivers holding either accept the message.
// Zero Secrets are skipped; with no usable secret Sign returns "".
//
// Sign is safe for concurrent use.
func Sign(msgID string, ts time.Time, body []byte, secrets ...Secret) string {
	n := 0
	for _, s := range secrets {
		if !s.IsZero() {
			n++
		}
	}
	if n == 0 {
		return ""
	}

	var b strings.Builder
	b.Grow(n*signatureSize + n - 1)
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if s.asym {
			b.WriteString(asymVersion)
			b.WriteByte(',')
			sig := asymSignature(s.raw(), msgID, ts.Unix(), body)
			b.Write(sig[:])
			continue
		}
		b.WriteString(signatureVersion)
		b.WriteByte(',')
		sig := signature(s.raw(), msgID, ts.Unix(), body)
		b.Write(sig[:])
	}
	return b.String()
}

// Headers returns the three headers of a signed webhook: webhook-id (msgID,
// which stays the same across retries), webhook-timestamp (ts in Unix
// seconds) and webhook-signature (see Sign). Sign a new attempt with a fresh
// ts. If no secret is usable, webhook-signature is left out.
func Headers(msgID string, ts time.Time, body []byte, secrets ...Secret) http.Header {
	// One backing array for the three values; each slice is capped so that
	// an Add to one header cannot overwrite the next.
	v := &[3]string{msgID, strconv.FormatInt(ts.Unix(), 10), Sign(msgID, ts, body, secrets...)}
	h := make(http.Header, 3)
	h[canonicalID] = v[0:1:1]
	h[canonicalTimestamp] = v[1:2:2]
	if v[2] != "" {
		h[canonicalSignature] = v[2:3:3]
	}
	return h
}

// Verify checks a received webhook against the secret, with the system clock.
// It is VerifyAt with time.Now(); see VerifyAt for what it checks and returns.
func Verify(secret Secret, header http.Header, body []byte, tolerance time.Duration) error {
	return VerifyAt(secret, header, body, tolerance, time.Now())
}

// VerifyAt checks a received webhook as of now, which tests can fix. body
// must be the raw request body, byte for byte. It returns nil if the headers
// webhook-id, webhook-timestamp and webhook-signature are present, the
// timestamp is within tolerance of now (DefaultTolerance if tolerance is zero
// or less), and any "v1," signature in webhook-signature matches; signatures
// of other versions are ignored. The comparison takes constant time.
//
// Otherwise it returns an error wrapping ErrMissingHeaders, ErrInvalidHeader,
// ErrTimestampTooOld, ErrTimestampTooNew or ErrInvalidSignature, in the order
// of those checks, or ErrInvalidSecret for the zero Secret. It never panics.
func VerifyAt(secret Secret, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if secret.IsZero() {
		return fmt.Errorf("%w: zero Secret", ErrInvalidSecret)
	}
	if secret.asym {
		return VerifyPublicKeyAt(secret.PublicKey(), header, body, tolerance, now)
	}
	msgID, ts, err := checkHeaders(header, tolerance, now)
	if err != nil {
		return err
	}

	want := signature(secret.raw(), msgID, ts, body)

	var got [encodedMACSize]byte
	for _, key := range [...]string{canonicalSignature, HeaderSignature} {
		for _, value := range header[key] {
			for entry := range strings.SplitSeq(value, " ") {
				version, sig, ok := strings.Cut(entry, ",")
				if !ok || version != signatureVersion || len(sig) != encodedMACSize {
					continue
				}
				copy(got[:], sig)
				if hmac.Equal(got[:], want[:]) {
					return nil
				}
			}
		}
	}
	return ErrInvalidSignature
}

// headerValue returns the first value of a header, looked up by its
// canonical name and then by its lowercase name, for headers built as map
// literals rather than with http.Header.Set.
func headerValue(h http.Header, canonical, lower string) string {
	if v := h[canonical]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	if v := h[lower]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Unix seconds of the first and last instants of years 1 and 9999: bounds
// within which time.Unix does not overflow and time.Time.Sub saturates
// correctly.
const (
	minUnix = -62135596800
	maxUnix = 253402300799
)

// unixTime is time.Unix(sec, 0) with sec clamped to the years 1 to 9999.
func unixTime(sec int64) time.Time {
	return time.Unix(min(max(sec, minUnix), maxUnix), 0)
}

// signature returns the base64 HMAC-SHA256 of "msgID.ts.body" under key.
func signature(key string, msgID string, ts int64, body []byte) [encodedMACSize]byte {
	m := hmac.New(sha256.New, []byte(key))
	var head [64]byte
	h := append(head[:0], msgID...)
	h = append(h, '.')
	h = strconv.AppendInt(h, ts, 10)
	h = append(h, '.')
	m.Write(h)
	m.Write(body)
	var sum [sha256.Size]byte
	var enc [encodedMACSize]byte
	base64.StdEncoding.Encode(enc[:], m.Sum(sum[:0]))
	return enc
}

// checkHeaders checks what both schemes need: the three headers present and
// the timestamp within tolerance of now. It returns the message ID and the
// timestamp.
func checkHeaders(header http.Header, tolerance time.Duration, now time.Time) (string, int64, error) {
	msgID := headerValue(header, canonicalID, HeaderID)
	tsText := headerValue(header, canonicalTimestamp, HeaderTimestamp)
	hasSignature := headerValue(header, canonicalSignature, HeaderSignature) != ""
	if msgID == "" || tsText == "" || !hasSignature {
		var missing []string
		if msgID == "" {
			missing = append(missing, HeaderID)
		}
		if tsText == "" {
			missing = append(missing, HeaderTimestamp)
		}
		if !hasSignature {
			missing = append(missing, HeaderSignature)
		}
		return "", 0, fmt.Errorf("%w: %s", ErrMissingHeaders, strings.Join(missing, ", "))
	}

	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s is not an integer number of seconds", ErrInvalidHeader, HeaderTimestamp)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	switch age := now.Sub(unixTime(ts)); {
	case age > tolerance:
		return "", 0, fmt.Errorf("%w: sent %v ago, tolerance %v", ErrTimestampTooOld, age, tolerance)
	case age < -tolerance:
		ahead := -age
		if ahead < 0 { // age was the saturated minimum
			ahead = math.MaxInt64
		}
		return "", 0, fmt.Errorf("%w: sent %v ahead, tolerance %v", ErrTimestampTooNew, ahead, tolerance)
	}
	return msgID, ts, nil
}
