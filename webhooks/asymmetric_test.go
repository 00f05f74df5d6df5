package webhooks_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

// goldenSeed is the fixed ed25519 seed of the v1a golden vector: bytes 0..31.
func goldenSeed() []byte {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return seed
}

// The golden vector: the public key and signature crypto/ed25519 makes from
// goldenSeed for this message (ed25519 signatures are deterministic).
const (
	goldenMsgID  = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	goldenTS     = 1614265330
	goldenBody   = `{"test": 2432232314}`
	goldenPublic = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
	goldenSig    = "v1a,yoUrgEkc12aGqm0n4Sydmdz55xJfTz4AsAgieHFjmkR7LJtqVCZOQYzvvHjI5kAey+r4iaBGxTFRrl2iBQxtDQ=="
)

// oracleAsym is the v1a entry crypto/ed25519 makes, independently of Sign.
func oracleAsym(seed []byte, msgID string, ts int64, body []byte) string {
	msg := []byte(msgID + "." + strconv.FormatInt(ts, 10) + "." + string(body))
	return "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(ed25519.NewKeyFromSeed(seed), msg))
}

func mustSigningKey(t testing.TB, seed []byte) webhooks.Secret {
	t.Helper()
	k, err := webhooks.SigningKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestV1aGoldenVector(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t, goldenSeed())
	now := time.Unix(goldenTS, 0)
	sig := webhooks.Sign(goldenMsgID, now, []byte(goldenBody), key)
	if sig != goldenSig {
		t.Errorf("Sign = %q, want the golden %q", sig, goldenSig)
	}
	if want := oracleAsym(goldenSeed(), goldenMsgID, goldenTS, []byte(goldenBody)); sig != want {
		t.Errorf("Sign = %q, crypto/ed25519 says %q", sig, want)
	}
	if got := key.PublicKey().String(); got != goldenPublic {
		t.Errorf("PublicKey = %q, want %q", got, goldenPublic)
	}
	if key.Scheme() != webhooks.SchemeV1a {
		t.Errorf("Scheme = %q", key.Scheme())
	}
	pub, err := webhooks.ParsePublicKey(goldenPublic)
	if err != nil {
		t.Fatal(err)
	}
	h := webhooks.Headers(goldenMsgID, now, []byte(goldenBody), key)
	if err := webhooks.VerifyPublicKeyAt(pub, h, []byte(goldenBody), 0, now); err != nil {
		t.Fatalf("golden message rejected: %v", err)
	}
	// Verify given the signing key checks with its public half.
	if err := webhooks.VerifyAt(key, h, []byte(goldenBody), 0, now); err != nil {
		t.Fatalf("VerifyAt with the signing key: %v", err)
	}

	tamper := func(name string, h http.Header, body string) {
		t.Helper()
		if err := webhooks.VerifyPublicKeyAt(pub, h, []byte(body), 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
			t.Errorf("%s: %v, want ErrInvalidSignature", name, err)
		}
	}
	tamper("tampered body", h, goldenBody+" ")
	h2 := h.Clone()
	h2.Set("webhook-timestamp", strconv.Itoa(goldenTS+1))
	tamper("tampered timestamp", h2, goldenBody)
	h3 := h.Clone()
	h3.Set("webhook-id", goldenMsgID+"x")
	tamper("tampered id", h3, goldenBody)

	other, err := webhooks.ParsePublicKey(mustSigningKey(t, bytes.Repeat([]byte{9}, 32)).PublicKey().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := webhooks.VerifyPublicKeyAt(other, h, []byte(goldenBody), 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("another public key: %v, want ErrInvalidSignature", err)
	}
	// A v1 secret does not accept a v1a signature, nor a key the v1 one.
	if err := webhooks.VerifyAt(webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="), h, []byte(goldenBody), 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("v1 secret on a v1a message: %v", err)
	}
	// Headers and timestamp are checked as for v1.
	if err := webhooks.VerifyPublicKeyAt(pub, h, []byte(goldenBody), 0, now.Add(10*time.Minute)); !errors.Is(err, webhooks.ErrTimestampTooOld) {
		t.Errorf("late: %v, want ErrTimestampTooOld", err)
	}
	if err := webhooks.VerifyPublicKeyAt(pub, http.Header{}, []byte(goldenBody), 0, now); !errors.Is(err, webhooks.ErrMissingHeaders) {
		t.Errorf("no headers: %v, want ErrMissingHeaders", err)
	}
	if err := webhooks.VerifyPublicKeyAt(webhooks.PublicKey{}, h, []byte(goldenBody), 0, now); !errors.Is(err, webhooks.ErrInvalidPublicKey) {
		t.Errorf("zero key: %v, want ErrInvalidPublicKey", err)
	}
}

// Entries are space-separated: v1 and v1a ones side by side, each checked
// by its own kind of key; malformed entries are skipped.
func TestV1aMultipleEntries(t *testing.T) {
	t.Parallel()
	now := time.Unix(goldenTS, 0)
	body := []byte(goldenBody)
	secret := webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=")
	k1 := mustSigningKey(t, goldenSeed())
	k2 := mustSigningKey(t, bytes.Repeat([]byte{1}, 32))
	h := webhooks.Headers(goldenMsgID, now, body, k2, secret, k1)
	entries := strings.Fields(h.Get("webhook-signature"))
	if len(entries) != 3 || !strings.HasPrefix(entries[0], "v1a,") || !strings.HasPrefix(entries[1], "v1,") || !strings.HasPrefix(entries[2], "v1a,") {
		t.Fatalf("entries %q", entries)
	}
	for i, k := range []webhooks.Secret{k1, k2} {
		if err := webhooks.VerifyPublicKeyAt(k.PublicKey(), h, body, 0, now); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	if err := webhooks.VerifyAt(secret, h, body, 0, now); err != nil {
		t.Errorf("v1 secret: %v", err)
	}
	k3 := mustSigningKey(t, bytes.Repeat([]byte{3}, 32))
	if err := webhooks.VerifyPublicKeyAt(k3.PublicKey(), h, body, 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("unrelated key: %v", err)
	}

	good := entries[2]
	raw := strings.TrimPrefix(good, "v1a,")
	junk := []string{
		"v1a," + strings.TrimRight(raw, "="), // unpadded
		"v1a," + raw[:86] + "A=",             // not canonical padding
		"v1a," + strings.Repeat("!", 88),     // not base64
		"v1a," + raw + "==",                  // too long
		"v1," + raw,                          // wrong version
		"v1b," + raw,
		"v1a" + raw,
		"",
	}
	bad := h.Clone()
	bad.Set("webhook-signature", strings.Join(junk, " "))
	if err := webhooks.VerifyPublicKeyAt(k1.PublicKey(), bad, body, 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("junk entries: %v, want ErrInvalidSignature", err)
	}
	bad.Set("webhook-signature", strings.Join(append(junk, good), " "))
	if err := webhooks.VerifyPublicKeyAt(k1.PublicKey(), bad, body, 0, now); err != nil {
		t.Errorf("junk then the good entry: %v", err)
	}
}

func TestSigningKeyStaysSecret(t *testing.T) {
	t.Parallel()
	k := mustSigningKey(t, goldenSeed())
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%+v %#v %s", k, k, k), fmt.Sprintf("%v", struct{ K webhooks.Secret }{k})} {
		if strings.Contains(s, "whsk_") || strings.Contains(s, base64.StdEncoding.EncodeToString(goldenSeed())[:10]) {
			t.Errorf("printed the key: %s", s)
		}
	}
	if s := k.String(); !strings.HasPrefix(s, webhooks.SigningKeyPrefix) {
		t.Errorf("String = %.8q…", s)
	}
	if _, err := webhooks.ParseSecret(k.String()); err == nil {
		t.Error("ParseSecret took a whsk_ key as a v1 secret")
	}
	for _, s := range []string{"", "whpk_", "whpk_AAAA", "whpk_" + strings.Repeat("A", 44), "whpk_!!"} {
		if _, err := webhooks.ParsePublicKey(s); !errors.Is(err, webhooks.ErrInvalidPublicKey) {
			t.Errorf("ParsePublicKey(%q) = %v", s, err)
		}
	}
	if _, err := webhooks.SigningKeyFromSeed([]byte{1}); !errors.Is(err, webhooks.ErrInvalidSecret) {
		t.Errorf("short seed: %v", err)
	}
}

// FuzzVerifyPublicKey: arbitrary headers never panic and are accepted only
// when they carry the signature crypto/ed25519 makes; Sign's verify, and a
// flipped body byte never does.
func FuzzVerifyPublicKey(f *testing.F) {
	f.Add(goldenMsgID, int64(goldenTS), []byte(goldenBody), strconv.Itoa(goldenTS), goldenSig, goldenSeed(), uint(3))
	f.Add("", int64(0), []byte{}, "", "", []byte{}, uint(0))
	f.Add("a.b", int64(-1), []byte("\x00\xff"), "-1", "v1a,x v1, v1a,,, v2,abc v1a,"+strings.Repeat("A", 88), bytes.Repeat([]byte{7}, 40), uint(99))
	f.Add("id", int64(fuzzMaxUnix), []byte("body"), "99999999999999999999", " v1a,"+strings.Repeat("/", 86)+"== ", []byte("k"), uint(1))

	f.Fuzz(func(t *testing.T, msgID string, ts int64, body []byte, tsHeader, sigHeader string, seed []byte, flip uint) {
		seed = append(seed, make([]byte, ed25519.SeedSize)...)[:ed25519.SeedSize]
		key := mustSigningKey(t, seed)
		pub, err := webhooks.ParsePublicKey(key.PublicKey().String())
		if err != nil {
			t.Fatal(err)
		}
		ts = min(max(ts, fuzzMinUnix), fuzzMaxUnix)
		now := time.Unix(ts, 0)
		for _, h := range []http.Header{
			{"Webhook-Id": {msgID}, "Webhook-Timestamp": {tsHeader}, "Webhook-Signature": {sigHeader}},
			{"webhook-id": {msgID}, "webhook-timestamp": {tsHeader}, "webhook-signature": {sigHeader, sigHeader}},
		} {
			err := webhooks.VerifyPublicKeyAt(pub, h, body, 0, now)
			if err == nil {
				sent, perr := strconv.ParseInt(tsHeader, 10, 64)
				if perr != nil {
					t.Fatalf("accepted a non-integer timestamp %q", tsHeader)
				}
				want := oracleAsym(seed, msgID, sent, body)
				if !strings.Contains(" "+sigHeader+" ", " "+want+" ") {
					t.Fatalf("accepted %q without the valid signature %q", sigHeader, want)
				}
				continue
			}
			if !isVerifyError(err) {
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if sig, want := webhooks.Sign(msgID, now, body, key), oracleAsym(seed, msgID, ts, body); sig != want {
			t.Fatalf("Sign = %q, crypto/ed25519 says %q", sig, want)
		}
		h := webhooks.Headers(msgID, now, body, key)
		err = webhooks.VerifyPublicKeyAt(pub, h, body, 0, now)
		if msgID == "" {
			if !errors.Is(err, webhooks.ErrMissingHeaders) {
				t.Fatalf("empty ID: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("VerifyPublicKeyAt of Headers: %v", err)
		}
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[flip%uint(len(tampered))] ^= byte(flip%255) + 1
			if err := webhooks.VerifyPublicKeyAt(pub, h, tampered, 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
				t.Fatalf("tampered body: %v", err)
			}
		}
	})
}

// A v1a endpoint: its public key is on it, deliveries carry v1a entries, a
// rotation signs with both key pairs during the overlap, and a PATCH back to
// v1 gives a secret while the old key pair still signs.
func TestV1aEndpointRotationAndPatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	rcv := newReceiver(t)
	ep, k0, err := b.store.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: rcv.URL + "/in", SignatureScheme: webhooks.SchemeV1a})
	if err != nil {
		t.Fatal(err)
	}
	if ep.SignatureScheme != webhooks.SchemeV1a || ep.PublicKey != k0.PublicKey().String() || !strings.HasPrefix(ep.PublicKey, "whpk_") {
		t.Fatalf("created %+v", ep)
	}
	got, err := b.store.Endpoint(ctx, "acme", ep.ID)
	if err != nil || got.PublicKey != ep.PublicKey || got.SignatureScheme != webhooks.SchemeV1a {
		t.Fatalf("read back %+v, %v", got, err)
	}
	deliver := func() request {
		t.Helper()
		_, refs := b.publish(t, "acme", "")
		b.deliver(t, one(t, refs))
		return rcv.next(t)
	}
	verify := func(when string, req request, pub string, want error) {
		t.Helper()
		p, err := webhooks.ParsePublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := webhooks.VerifyPublicKeyAt(p, req.header, req.body, 0, b.clock.now()); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", when, err, want)
		}
	}
	req := deliver()
	if sig := req.header.Get("webhook-signature"); !strings.HasPrefix(sig, "v1a,") || strings.Contains(sig, " ") {
		t.Errorf("signature %q, want one v1a entry", sig)
	}
	verify("first", req, ep.PublicKey, nil)

	rotated, k1, err := b.store.RotateSecret(ctx, "acme", ep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PublicKey == ep.PublicKey || k1.Scheme() != webhooks.SchemeV1a || rotated.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotated %+v", rotated)
	}
	req = deliver()
	if n := len(strings.Fields(req.header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d entries during the overlap, want 2", n)
	}
	verify("overlap, old key", req, ep.PublicKey, nil)
	verify("overlap, new key", req, rotated.PublicKey, nil)

	v1 := webhooks.SchemeV1
	patched, secret, err := b.store.UpdateEndpoint(ctx, "acme", ep.ID, webhooks.EndpointPatch{SignatureScheme: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if patched.SignatureScheme != webhooks.SchemeV1 || patched.PublicKey != "" || secret.IsZero() || secret.Scheme() != webhooks.SchemeV1 {
		t.Fatalf("patched to v1: %+v", patched)
	}
	req = deliver()
	if err := webhooks.VerifyAt(secret, req.header, req.body, 0, b.clock.now()); err != nil {
		t.Errorf("v1 after the patch: %v", err)
	}
	verify("after the patch, rotated key still in its overlap", req, rotated.PublicKey, nil)

	b.clock.advance(25 * time.Hour)
	req = deliver()
	verify("after the overlaps", req, rotated.PublicKey, webhooks.ErrInvalidSignature)
	if sig := req.header.Get("webhook-signature"); strings.Contains(sig, "v1a,") {
		t.Errorf("a v1a entry after the overlaps: %q", sig)
	}
	// Same scheme again: nothing rotates.
	if _, s, err := b.store.UpdateEndpoint(ctx, "acme", ep.ID, webhooks.EndpointPatch{SignatureScheme: &v1}); err != nil || !s.IsZero() {
		t.Errorf("same scheme: secret shown %v, err %v", !s.IsZero(), err)
	}
	for _, bad := range []string{"", "v2", "V1A"} {
		var v *webhooks.ValidationError
		if _, _, err := b.store.UpdateEndpoint(ctx, "acme", ep.ID, webhooks.EndpointPatch{SignatureScheme: &bad}); !errors.As(err, &v) || v.Fields[0].Field != "signature_scheme" {
			t.Errorf("scheme %q: %v", bad, err)
		}
		if _, _, err := b.store.CreateEndpoint(ctx, "acme", webhooks.EndpointInput{URL: rcv.URL, SignatureScheme: bad}); bad != "" && !errors.As(err, &v) {
			t.Errorf("create with scheme %q: %v", bad, err)
		}
	}
}

// BenchmarkSignScheme compares one v1 and one v1a signature of a 1 KiB
// body, and a v1a verification.
func BenchmarkSignScheme(b *testing.B) {
	ts := time.Unix(1767323045, 0)
	body := bytes.Repeat([]byte{'x'}, 1<<10)
	key := mustSigningKey(b, goldenSeed())
	for name, s := range map[string]webhooks.Secret{"v1": testSecret, "v1a": key} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				webhooks.Sign("evt_1", ts, body, s)
			}
		})
	}
	h := webhooks.Headers("evt_1", ts, body, key)
	b.Run("verify-v1a", func(b *testing.B) {
		for b.Loop() {
			if err := webhooks.VerifyPublicKeyAt(key.PublicKey(), h, body, 0, ts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
