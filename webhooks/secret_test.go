package webhooks_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/asyncgate/asyncgate/webhooks"
)

// specSecret is the secret of the Standard Webhooks example: a 24-byte key.
const specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestNewSecret(t *testing.T) {
	t.Parallel()

	a, err := webhooks.NewSecret()
	if err != nil {
		t.Fatalf("NewSecret: %v", err)
	}
	b, err := webhooks.NewSecret()
	if err != nil {
		t.Fatalf("NewSecret: %v", err)
	}
	if a.IsZero() || b.IsZero() {
		t.Fatal("NewSecret returned the zero Secret")
	}
	if a.Equal(b) {
		t.Error("two NewSecret calls returned the same key")
	}

	text := a.String()
	enc, ok := strings.CutPrefix(text, webhooks.SecretPrefix)
	if !ok {
		t.Fatalf("String() = %q, want the %q prefix", text, webhooks.SecretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		t.Fatalf("String() is not standard base64 after the prefix: %v", err)
	}
	if len(key) != webhooks.SecretSize {
		t.Errorf("key is %d bytes, want %d", len(key), webhooks.SecretSize)
	}
	if len(text) != len("whsec_")+44 {
		t.Errorf("len(String()) = %d, want %d", len(text), len("whsec_")+44)
	}

	back, err := webhooks.ParseSecret(text)
	if err != nil {
		t.Fatalf("ParseSecret(String()): %v", err)
	}
	if !back.Equal(a) {
		t.Error("ParseSecret(String()) is not Equal to the original")
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()

	key32 := bytes.Repeat([]byte{0xA5}, 32)
	b64 := base64.StdEncoding.EncodeToString

	tests := []struct {
		name    string
		in      string
		want    string // String() of the result; "" when an error is expected
		wantErr string // a part of the error message
	}{
		{name: "whsec form", in: "whsec_" + b64(key32), want: "whsec_" + b64(key32)},
		{name: "bare base64", in: b64(key32), want: "whsec_" + b64(key32)},
		{name: "spec example, 24 bytes", in: specSecret, want: specSecret},
		{name: "surrounding white space", in: " \twhsec_" + b64(key32) + "\n", want: "whsec_" + b64(key32)},
		{name: "64 bytes", in: "whsec_" + b64(bytes.Repeat([]byte{1}, 64)), want: "whsec_" + b64(bytes.Repeat([]byte{1}, 64))},
		{name: "longer than a SHA-256 block", in: b64(bytes.Repeat([]byte{2}, 100)), want: "whsec_" + b64(bytes.Repeat([]byte{2}, 100))},
		{name: "empty", in: "", wantErr: "empty"},
		{name: "only white space", in: "  \n", wantErr: "empty"},
		{name: "prefix only", in: "whsec_", wantErr: "empty"},
		{name: "not base64", in: "whsec_not*base64!", wantErr: "not standard base64"},
		{name: "URL-safe alphabet", in: "whsec_" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), wantErr: "not standard base64"},
		{name: "missing padding", in: "whsec_" + base64.RawStdEncoding.EncodeToString(key32), wantErr: "not standard base64"},
		{name: "wrong prefix", in: "whsk_" + b64(key32), wantErr: "not standard base64"},
		{name: "too short", in: "whsec_" + b64(key32[:16]), wantErr: "key is 16 bytes, want at least 24"},
		{name: "one byte short", in: "whsec_" + b64(key32[:23]), wantErr: "key is 23 bytes, want at least 24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			s, err := webhooks.ParseSecret(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSecret(%q) = nil error, want one containing %q", tt.in, tt.wantErr)
				}
				if !errors.Is(err, webhooks.ErrInvalidSecret) {
					t.Errorf("error %v does not wrap ErrInvalidSecret", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if trimmed := strings.TrimSpace(tt.in); len(trimmed) > len("whsec_") && strings.Contains(err.Error(), trimmed) {
					t.Errorf("error %q quotes the secret", err)
				}
				if !s.IsZero() {
					t.Error("a failed ParseSecret returned a non-zero Secret")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, s.String()); diff != "" {
				t.Errorf("String() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMustParseSecret(t *testing.T) {
	t.Parallel()

	if got := webhooks.MustParseSecret(specSecret).String(); got != specSecret {
		t.Errorf("MustParseSecret(%q).String() = %q", specSecret, got)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("MustParseSecret of an invalid secret did not panic")
		}
	}()
	webhooks.MustParseSecret("whsec_short")
}

func TestSecretEqual(t *testing.T) {
	t.Parallel()

	a := webhooks.MustParseSecret(specSecret)
	a2 := webhooks.MustParseSecret(strings.TrimPrefix(specSecret, "whsec_"))
	b, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	var zero webhooks.Secret

	tests := []struct {
		name string
		x, y webhooks.Secret
		want bool
	}{
		{"same key, parsed twice", a, a2, true},
		{"different keys", a, b, false},
		{"zero and zero", zero, zero, true},
		{"key and zero", a, zero, false},
		{"zero and key", zero, a, false},
	}
	for _, tt := range tests {
		if got := tt.x.Equal(tt.y); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
	}
	// go-cmp uses the Equal method.
	if !cmp.Equal(a, a2) {
		t.Error("cmp.Equal does not see equal Secrets as equal")
	}
	if zero.String() != "" || !zero.IsZero() {
		t.Errorf("zero Secret: String() = %q, IsZero() = %v", zero.String(), zero.IsZero())
	}
}

// leakForms returns the forms in which a secret's key must never appear in
// logs and messages.
func leakForms(t *testing.T, s webhooks.Secret) []string {
	t.Helper()
	enc := strings.TrimPrefix(s.String(), webhooks.SecretPrefix)
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		enc,
		string(raw),
		hex.EncodeToString(raw),
		strings.ToUpper(hex.EncodeToString(raw)),
		fmt.Sprintf("%q", string(raw)),
		fmt.Sprint(raw),
	}
}

func assertNoLeak(t *testing.T, what, out string, forms []string) {
	t.Helper()
	for _, f := range forms {
		if strings.Contains(out, f) {
			t.Errorf("%s leaks the key: %q", what, out)
			return
		}
	}
}

func TestSecretFormatRedacts(t *testing.T) {
	t.Parallel()

	s, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	forms := leakForms(t, s)

	type exported struct{ Secret webhooks.Secret }
	type unexported struct{ secret webhooks.Secret }
	values := map[string]any{
		"Secret":                       s,
		"*Secret":                      &s,
		"[]Secret":                     []webhooks.Secret{s, s},
		"map[string]Secret":            map[string]webhooks.Secret{"k": s},
		"struct with exported field":   exported{s},
		"*struct with exported field":  &exported{s},
		"struct with unexported field": unexported{s},
		"*struct with unexported":      &unexported{s},
		"any in a slice":               []any{s},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%T"}
	for name, v := range values {
		for _, verb := range verbs {
			assertNoLeak(t, fmt.Sprintf("Sprintf(%q, %s)", verb, name), fmt.Sprintf(verb, v), forms)
		}
		assertNoLeak(t, "Sprint("+name+")", fmt.Sprint(v), forms)
		assertNoLeak(t, "Sprintln("+name+")", fmt.Sprintln(v), forms)
		assertNoLeak(t, "error wrapping "+name, fmt.Errorf("endpoint %v: %w", v, errors.New("boom")).Error(), forms)
	}

	for _, tt := range []struct{ verb, want string }{
		{"%v", "REDACTED"},
		{"%+v", "REDACTED"},
		{"%s", "REDACTED"},
		{"%#v", "webhooks.Secret{REDACTED}"},
	} {
		if got := fmt.Sprintf(tt.verb, s); got != tt.want {
			t.Errorf("Sprintf(%q, secret) = %q, want %q", tt.verb, got, tt.want)
		}
	}
	if got := s.GoString(); got != "webhooks.Secret{REDACTED}" {
		t.Errorf("GoString() = %q", got)
	}
	if got := fmt.Sprintf("%+v", exported{s}); got != "{Secret:REDACTED}" {
		t.Errorf("Sprintf(%%+v, struct) = %q, want %q", got, "{Secret:REDACTED}")
	}
}

func TestSecretLogValueRedacts(t *testing.T) {
	t.Parallel()

	s, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	forms := leakForms(t, s)

	if got := s.LogValue(); got.Kind() != slog.KindString || got.String() != "REDACTED" {
		t.Errorf("LogValue() = %v (%v), want the string REDACTED", got, got.Kind())
	}

	type endpoint struct {
		URL    string
		Secret webhooks.Secret
	}
	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	}
	for name, newHandler := range handlers {
		var buf bytes.Buffer
		log := slog.New(newHandler(&buf))
		log.Info("created", "secret", s)
		log.Info("created", slog.Any("secret", s), slog.Any("ptr", &s))
		log.Info("created", slog.Group("endpoint", "secret", s))
		log.Info("created", "endpoint", endpoint{URL: "https://example.com", Secret: s})
		log.With("secret", s).Info("rotated")
		out := buf.String()
		assertNoLeak(t, name+" handler", out, forms)
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s handler output has no REDACTED:\n%s", name, out)
		}
	}
}

func TestSecretJSONHasNoKey(t *testing.T) {
	t.Parallel()

	s := webhooks.MustParseSecret(specSecret)
	out, err := json.Marshal(struct{ Secret webhooks.Secret }{s})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"Secret":{}}`, string(out)); diff != "" {
		t.Errorf("json.Marshal mismatch (-want +got):\n%s", diff)
	}
}
