package webhooks_test

import (
	"bytes"
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

// Unix seconds of the years 1 and 9999: the range of real clocks.
const (
	fuzzMinUnix = -62135596800
	fuzzMaxUnix = 253402300799
)

func FuzzVerify(f *testing.F) {
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`),
		"1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		[]byte("0123456789abcdef01234567"), uint(3))
	f.Add("", int64(0), []byte{}, "", "", []byte{}, uint(0))
	f.Add("a.b", int64(-1), []byte("\x00\xff"), "-1", "v1a,x v1, v1,,, v2,abc", bytes.Repeat([]byte{7}, 100), uint(99))
	f.Add("id", int64(fuzzMaxUnix), []byte("body"), "99999999999999999999", " v1,AAAA ", []byte("k"), uint(1))
	f.Add("id", int64(fuzzMinUnix), []byte("body"), "+0", "v1,"+strings.Repeat("A", 43)+"=", []byte("k"), uint(1))

	f.Fuzz(func(t *testing.T, msgID string, ts int64, body []byte, tsHeader, sigHeader string, key []byte, flip uint) {
		if len(key) < webhooks.MinSecretSize {
			key = append(key, make([]byte, webhooks.MinSecretSize-len(key))...)
		}
		secret, err := webhooks.ParseSecret(base64.StdEncoding.EncodeToString(key))
		if err != nil {
			t.Fatalf("ParseSecret of a %d-byte key: %v", len(key), err)
		}
		ts = min(max(ts, fuzzMinUnix), fuzzMaxUnix)
		now := time.Unix(ts, 0)

		// Arbitrary headers never panic, and are accepted only if they carry
		// the signature that crypto/hmac computes for them.
		for _, h := range []http.Header{
			{"Webhook-Id": {msgID}, "Webhook-Timestamp": {tsHeader}, "Webhook-Signature": {sigHeader}},
			{"webhook-id": {msgID}, "webhook-timestamp": {tsHeader}, "webhook-signature": {sigHeader, sigHeader}},
			{"Webhook-Signature": {sigHeader}},
		} {
			err := webhooks.VerifyAt(secret, h, body, 0, now)
			if err == nil {
				sent, perr := strconv.ParseInt(tsHeader, 10, 64)
				if perr != nil {
					t.Fatalf("accepted a non-integer timestamp %q", tsHeader)
				}
				want := oracleSign(key, msgID, sent, body)
				if !strings.Contains(" "+sigHeader+" ", " "+want+" ") {
					t.Fatalf("accepted signature header %q without the valid signature %q", sigHeader, want)
				}
				continue
			}
			if !isVerifyError(err) {
				t.Fatalf("VerifyAt returned an unexpected error: %v", err)
			}
		}

		// A signature made by Sign is the one crypto/hmac makes, and verifies.
		sig := webhooks.Sign(msgID, now, body, secret)
		if want := oracleSign(key, msgID, ts, body); sig != want {
			t.Fatalf("Sign = %q, crypto/hmac says %q", sig, want)
		}
		h := webhooks.Headers(msgID, now, body, secret)
		err = webhooks.VerifyAt(secret, h, body, 0, now)
		if msgID == "" {
			if !errors.Is(err, webhooks.ErrMissingHeaders) {
				t.Fatalf("VerifyAt with an empty ID = %v, want ErrMissingHeaders", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("VerifyAt of Headers(%q, %d, %q): %v", msgID, ts, body, err)
		}

		// A body with one byte flipped never verifies.
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[flip%uint(len(tampered))] ^= byte(flip%255) + 1
			if err := webhooks.VerifyAt(secret, h, tampered, 0, now); !errors.Is(err, webhooks.ErrInvalidSignature) {
				t.Fatalf("VerifyAt of a tampered body = %v, want ErrInvalidSignature", err)
			}
		}
	})
}

func isVerifyError(err error) bool {
	for _, target := range []error{
		webhooks.ErrMissingHeaders,
		webhooks.ErrInvalidHeader,
		webhooks.ErrTimestampTooOld,
		webhooks.ErrTimestampTooNew,
		webhooks.ErrInvalidSignature,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func FuzzParseSecret(f *testing.F) {
	f.Add(specSecret)
	f.Add("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	f.Add("")
	f.Add("whsec_")
	f.Add("whsec_====")
	f.Add("whsec_whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add(" \nwhsec_AAECAwQFBgcICQoLDA0O\nDxAREhMUFRYXGBkaGxwdHh8=\r\n")

	f.Fuzz(func(t *testing.T, text string) {
		s, err := webhooks.ParseSecret(text)
		if err != nil {
			if !errors.Is(err, webhooks.ErrInvalidSecret) {
				t.Fatalf("error %v does not wrap ErrInvalidSecret", err)
			}
			if !s.IsZero() {
				t.Fatal("a failed ParseSecret returned a non-zero Secret")
			}
			return
		}

		full := s.String()
		enc, ok := strings.CutPrefix(full, webhooks.SecretPrefix)
		if !ok {
			t.Fatalf("String() = %q lacks the prefix", full)
		}
		key, err := base64.StdEncoding.Strict().DecodeString(enc)
		if err != nil {
			t.Fatalf("String() is not canonical base64: %v", err)
		}
		if len(key) < webhooks.MinSecretSize {
			t.Fatalf("accepted a %d-byte key", len(key))
		}

		back, err := webhooks.ParseSecret(full)
		if err != nil {
			t.Fatalf("ParseSecret(String()): %v", err)
		}
		if !back.Equal(s) || back.String() != full {
			t.Fatal("ParseSecret(String()) differs from the original")
		}

		for _, out := range []string{
			fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s),
			fmt.Sprint(s),
			s.GoString(),
			s.LogValue().String(),
		} {
			if strings.Contains(out, enc) || strings.Contains(out, string(key)) {
				t.Fatalf("formatting leaks the key: %q", out)
			}
		}
	})
}
