package webhooks_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/webhooks"
)

// vector is one case of testdata/signatures.json, whose signatures were
// computed with Python's hmac module by testdata/gen_signatures.py.
type vector struct {
	Name      string   `json:"name"`
	MsgID     string   `json:"msg_id"`
	Timestamp int64    `json:"timestamp"`
	Body      string   `json:"body"`
	Secrets   []string `json:"secrets"`
	Signature string   `json:"signature"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "signatures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("decode signatures.json: %v", err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("signatures.json has no vectors")
	}
	return file.Vectors
}

func TestGoldenVectors(t *testing.T) {
	t.Parallel()

	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()

			secrets := make([]webhooks.Secret, len(v.Secrets))
			for i, text := range v.Secrets {
				s, err := webhooks.ParseSecret(text)
				if err != nil {
					t.Fatalf("ParseSecret(%q): %v", text, err)
				}
				secrets[i] = s
			}
			ts := time.Unix(v.Timestamp, 0)
			body := []byte(v.Body)

			if diff := cmp.Diff(v.Signature, webhooks.Sign(v.MsgID, ts, body, secrets...)); diff != "" {
				t.Errorf("Sign mismatch (-want +got):\n%s", diff)
			}

			wantHeader := http.Header{
				"Webhook-Id":        {v.MsgID},
				"Webhook-Timestamp": {strconv.FormatInt(v.Timestamp, 10)},
				"Webhook-Signature": {v.Signature},
			}
			if diff := cmp.Diff(wantHeader, webhooks.Headers(v.MsgID, ts, body, secrets...)); diff != "" {
				t.Errorf("Headers mismatch (-want +got):\n%s", diff)
			}

			// The expected header, not our own output, verifies under each
			// secret on its own, as a receiver holding one of them sees it.
			for i, s := range secrets {
				if err := webhooks.VerifyAt(s, wantHeader, body, 0, ts); err != nil {
					t.Errorf("VerifyAt with secret %d: %v", i, err)
				}
			}
		})
	}
}

// testSecret is a fixed 32-byte secret for the tests.
var testSecret = webhooks.MustParseSecret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")

// oracleSign signs with crypto/hmac, independently of package webhooks.
func oracleSign(key []byte, msgID string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msgID + "." + strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func secretKey(t testing.TB, s webhooks.Secret) []byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s.String(), webhooks.SecretPrefix))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestSignSkipsZeroSecrets(t *testing.T) {
	t.Parallel()

	var zero webhooks.Secret
	ts := time.Unix(1767323045, 0)
	body := []byte(`{}`)
	want := oracleSign(secretKey(t, testSecret), "msg_1", ts.Unix(), body)

	if got := webhooks.Sign("msg_1", ts, body); got != "" {
		t.Errorf("Sign with no secrets = %q, want empty", got)
	}
	if got := webhooks.Sign("msg_1", ts, body, zero); got != "" {
		t.Errorf("Sign with the zero Secret = %q, want empty", got)
	}
	if got := webhooks.Sign("msg_1", ts, body, zero, testSecret, zero); got != want {
		t.Errorf("Sign(zero, secret, zero) = %q, want %q", got, want)
	}
	h := webhooks.Headers("msg_1", ts, body, zero)
	if _, ok := h["Webhook-Signature"]; ok {
		t.Errorf("Headers without a usable secret set webhook-signature: %v", h)
	}
}

func TestHeadersValuesAreIndependent(t *testing.T) {
	t.Parallel()

	ts := time.Unix(1767323045, 0)
	h := webhooks.Headers("msg_1", ts, nil, testSecret)
	want := h.Clone()
	h.Add(webhooks.HeaderID, "x")
	h.Add(webhooks.HeaderTimestamp, "y")
	want.Add(webhooks.HeaderID, "x")
	want.Add(webhooks.HeaderTimestamp, "y")
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("Add changed another header (-want +got):\n%s", diff)
	}
}

func TestSignTruncatesToSeconds(t *testing.T) {
	t.Parallel()

	body := []byte(`{}`)
	whole := time.Unix(1767323045, 0)
	frac := whole.Add(999 * time.Millisecond)
	if a, b := webhooks.Sign("m", whole, body, testSecret), webhooks.Sign("m", frac, body, testSecret); a != b {
		t.Errorf("sub-second part changed the signature: %q vs %q", a, b)
	}
	if got := webhooks.Headers("m", frac, body, testSecret).Get(webhooks.HeaderTimestamp); got != "1767323045" {
		t.Errorf("webhook-timestamp = %q, want 1767323045", got)
	}
}

func TestVerifyAt(t *testing.T) {
	t.Parallel()

	const msgID = "msg_2b5c2f1e"
	body := []byte(`{"type":"order.executed"}`)
	sent := time.Unix(1767323045, 0)
	otherSecret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	good := webhooks.Sign(msgID, sent, body, testSecret)
	other := webhooks.Sign(msgID, sent, body, otherSecret)

	// headers returns signed headers; edit changes them for a case.
	headers := func(edit func(h http.Header)) http.Header {
		h := webhooks.Headers(msgID, sent, body, testSecret)
		if edit != nil {
			edit(h)
		}
		return h
	}
	set := func(name, value string) func(http.Header) {
		return func(h http.Header) { h.Set(name, value) }
	}
	del := func(name string) func(http.Header) {
		return func(h http.Header) { h.Del(name) }
	}

	tests := []struct {
		name      string
		secret    *webhooks.Secret // nil for testSecret
		header    http.Header
		body      []byte
		tolerance time.Duration
		now       time.Time
		want      error // nil for success
		wantText  string
	}{
		{name: "valid", header: headers(nil)},
		{name: "valid, sub-second clock", header: headers(nil), now: sent.Add(999 * time.Millisecond)},
		{name: "second of two signatures", header: headers(set(webhooks.HeaderSignature, other+" "+good))},
		{name: "first of two signatures", header: headers(set(webhooks.HeaderSignature, good+" "+other))},
		{name: "unknown versions ignored", header: headers(set(webhooks.HeaderSignature, "v1a,"+good[3:]+" v2,xyz "+good))},
		{name: "extra spaces", header: headers(set(webhooks.HeaderSignature, "  "+good+"  "))},
		{name: "signature in a second header value", header: headers(func(h http.Header) {
			h.Set(webhooks.HeaderSignature, other)
			h.Add(webhooks.HeaderSignature, good)
		})},
		{name: "lowercase map keys", header: http.Header{
			"webhook-id":        {msgID},
			"webhook-timestamp": {strconv.FormatInt(sent.Unix(), 10)},
			"webhook-signature": {good},
		}},
		{name: "exactly tolerance old", header: headers(nil), now: sent.Add(webhooks.DefaultTolerance)},
		{name: "exactly tolerance ahead", header: headers(nil), now: sent.Add(-webhooks.DefaultTolerance)},

		{name: "zero secret", secret: &webhooks.Secret{}, header: headers(nil), want: webhooks.ErrInvalidSecret},
		{name: "nil header", header: nil, want: webhooks.ErrMissingHeaders, wantText: "webhook-id, webhook-timestamp, webhook-signature"},
		{name: "missing id", header: headers(del(webhooks.HeaderID)), want: webhooks.ErrMissingHeaders, wantText: "missing required headers: webhook-id"},
		{name: "empty id", header: headers(set(webhooks.HeaderID, "")), want: webhooks.ErrMissingHeaders},
		{name: "missing timestamp", header: headers(del(webhooks.HeaderTimestamp)), want: webhooks.ErrMissingHeaders, wantText: "webhook-timestamp"},
		{name: "missing signature", header: headers(del(webhooks.HeaderSignature)), want: webhooks.ErrMissingHeaders, wantText: "webhook-signature"},
		{name: "empty signature", header: headers(set(webhooks.HeaderSignature, "")), want: webhooks.ErrMissingHeaders},
		{name: "timestamp not a number", header: headers(set(webhooks.HeaderTimestamp, "yesterday")), want: webhooks.ErrInvalidHeader},
		{name: "timestamp overflows int64", header: headers(set(webhooks.HeaderTimestamp, "99999999999999999999")), want: webhooks.ErrInvalidHeader},
		{name: "timestamp fractional", header: headers(set(webhooks.HeaderTimestamp, "1767323045.5")), want: webhooks.ErrInvalidHeader},
		{name: "timestamp RFC 3339", header: headers(set(webhooks.HeaderTimestamp, sent.Format(time.RFC3339))), want: webhooks.ErrInvalidHeader},
		{name: "too old", header: headers(nil), now: sent.Add(webhooks.DefaultTolerance + time.Second), want: webhooks.ErrTimestampTooOld},
		{name: "too old by a nanosecond", header: headers(nil), now: sent.Add(webhooks.DefaultTolerance + 1), want: webhooks.ErrTimestampTooOld},
		{name: "too new", header: headers(nil), now: sent.Add(-webhooks.DefaultTolerance - time.Second), want: webhooks.ErrTimestampTooNew},
		{name: "custom tolerance, too old", header: headers(nil), tolerance: time.Minute, now: sent.Add(61 * time.Second), want: webhooks.ErrTimestampTooOld},
		{name: "custom tolerance, in time", header: headers(nil), tolerance: time.Hour, now: sent.Add(59 * time.Minute)},
		{name: "negative tolerance is the default", header: headers(nil), tolerance: -time.Hour, now: sent.Add(4 * time.Minute)},
		{name: "timestamp far in the past", header: headers(set(webhooks.HeaderTimestamp, strconv.FormatInt(math.MinInt64, 10))), want: webhooks.ErrTimestampTooOld},
		{name: "timestamp far in the future", header: headers(set(webhooks.HeaderTimestamp, strconv.FormatInt(math.MaxInt64, 10))), want: webhooks.ErrTimestampTooNew, wantText: "sent 2562047h47m16.854775807s ahead"},
		{name: "timestamp 10 minutes ahead", header: headers(nil), now: sent.Add(-10 * time.Minute), want: webhooks.ErrTimestampTooNew, wantText: "sent 10m0s ahead, tolerance 5m0s"},
		{name: "timestamp changed", header: headers(set(webhooks.HeaderTimestamp, strconv.FormatInt(sent.Unix()+1, 10))), want: webhooks.ErrInvalidSignature},
		{name: "id changed", header: headers(set(webhooks.HeaderID, msgID+"x")), want: webhooks.ErrInvalidSignature},
		{name: "body changed", header: headers(nil), body: []byte(`{"type":"order.executeD"}`), want: webhooks.ErrInvalidSignature},
		{name: "body empty", header: headers(nil), body: []byte{}, want: webhooks.ErrInvalidSignature},
		{name: "wrong secret", secret: &otherSecret, header: headers(nil), want: webhooks.ErrInvalidSignature},
		{name: "only other versions", header: headers(set(webhooks.HeaderSignature, "v1a,"+good[3:]+" v2,"+good[3:])), want: webhooks.ErrInvalidSignature},
		{name: "no version", header: headers(set(webhooks.HeaderSignature, good[3:])), want: webhooks.ErrInvalidSignature},
		{name: "comma separated", header: headers(set(webhooks.HeaderSignature, other+","+good)), want: webhooks.ErrInvalidSignature},
		{name: "signature truncated", header: headers(set(webhooks.HeaderSignature, good[:len(good)-1])), want: webhooks.ErrInvalidSignature},
		{name: "signature with extra byte", header: headers(set(webhooks.HeaderSignature, good+"=")), want: webhooks.ErrInvalidSignature},
		{name: "raw signature in hex", header: headers(set(webhooks.HeaderSignature, "v1,"+strings.Repeat("ab", 32))), want: webhooks.ErrInvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			secret := testSecret
			if tt.secret != nil {
				secret = *tt.secret
			}
			b := body
			if tt.body != nil {
				b = tt.body
			}
			now := sent
			if !tt.now.IsZero() {
				now = tt.now
			}

			err := webhooks.VerifyAt(secret, tt.header, b, tt.tolerance, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyAt: %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyAt error = %v, want %v", err, tt.want)
			}
			if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
		})
	}
}

func TestVerifyUsesTheClock(t *testing.T) {
	t.Parallel()

	body := []byte(`{"ok":true}`)
	if err := webhooks.Verify(testSecret, webhooks.Headers("msg_now", time.Now(), body, testSecret), body, 0); err != nil {
		t.Errorf("Verify of a message signed now: %v", err)
	}
	old := webhooks.Headers("msg_old", time.Now().Add(-10*time.Minute), body, testSecret)
	if err := webhooks.Verify(testSecret, old, body, 0); !errors.Is(err, webhooks.ErrTimestampTooOld) {
		t.Errorf("Verify of a message signed 10 minutes ago = %v, want ErrTimestampTooOld", err)
	}
	if err := webhooks.Verify(testSecret, old, body, time.Hour); err != nil {
		t.Errorf("Verify with a 1h tolerance: %v", err)
	}
}

// TestSignMatchesCryptoHMAC compares Sign with crypto/hmac over keys around
// the SHA-256 block size and bodies around its boundaries.
func TestSignMatchesCryptoHMAC(t *testing.T) {
	t.Parallel()

	for _, keyLen := range []int{24, 32, 63, 64, 65, 128, 1000} {
		key := bytes.Repeat([]byte{byte(keyLen)}, keyLen)
		s := webhooks.MustParseSecret(base64.StdEncoding.EncodeToString(key))
		for _, bodyLen := range []int{0, 1, 55, 56, 63, 64, 65, 1 << 16} {
			body := bytes.Repeat([]byte{'x'}, bodyLen)
			want := oracleSign(key, "msg", 1767323045, body)
			if got := webhooks.Sign("msg", time.Unix(1767323045, 0), body, s); got != want {
				t.Errorf("key %d bytes, body %d bytes: Sign = %q, want %q", keyLen, bodyLen, got, want)
			}
		}
	}
	// A long message ID.
	id := strings.Repeat("i", 5000)
	if got, want := webhooks.Sign(id, time.Unix(1, 0), nil, testSecret), oracleSign(secretKey(t, testSecret), id, 1, nil); got != want {
		t.Errorf("long ID: Sign = %q, want %q", got, want)
	}
}

func TestSignConcurrent(t *testing.T) {
	t.Parallel()

	a, b := testSecret, webhooks.MustParseSecret(specSecret)
	keyA, keyB := secretKey(t, a), secretKey(t, b)
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				id := "msg_" + strconv.Itoa(g) + "_" + strconv.Itoa(i)
				body := []byte(strings.Repeat("b", i))
				want := oracleSign(keyA, id, int64(i), body) + " " + oracleSign(keyB, id, int64(i), body)
				if got := webhooks.Sign(id, time.Unix(int64(i), 0), body, a, b); got != want {
					t.Errorf("Sign(%q) = %q, want %q", id, got, want)
					return
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
}

func BenchmarkSign(b *testing.B) {
	s1, s2 := testSecret, webhooks.MustParseSecret(specSecret)
	ts := time.Unix(1767323045, 0)
	for _, size := range []int{256, 4 << 10, 64 << 10} {
		body := bytes.Repeat([]byte{'x'}, size)
		b.Run("body="+strconv.Itoa(size)+"/secrets=1", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				webhooks.Sign("2b5c2f1e-8a4e-7c3d-9f00-0123456789ab", ts, body, s1)
			}
		})
		b.Run("body="+strconv.Itoa(size)+"/secrets=2", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				webhooks.Sign("2b5c2f1e-8a4e-7c3d-9f00-0123456789ab", ts, body, s1, s2)
			}
		})
	}
}

func BenchmarkHeaders(b *testing.B) {
	body := bytes.Repeat([]byte{'x'}, 256)
	ts := time.Unix(1767323045, 0)
	b.ReportAllocs()
	for b.Loop() {
		webhooks.Headers("2b5c2f1e-8a4e-7c3d-9f00-0123456789ab", ts, body, testSecret)
	}
}

func BenchmarkVerify(b *testing.B) {
	body := bytes.Repeat([]byte{'x'}, 256)
	ts := time.Unix(1767323045, 0)
	other := webhooks.MustParseSecret(specSecret)
	h := webhooks.Headers("2b5c2f1e-8a4e-7c3d-9f00-0123456789ab", ts, body, other, testSecret)
	b.ReportAllocs()
	for b.Loop() {
		if err := webhooks.VerifyAt(testSecret, h, body, 0, ts); err != nil {
			b.Fatal(err)
		}
	}
}
