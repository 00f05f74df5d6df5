package webhooks_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

func ExampleSign() {
	// The example of the Standard Webhooks specification.
	secret, err := webhooks.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	sent := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)

	fmt.Println(webhooks.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", sent, body, secret))
	// Output:
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

func ExampleHeaders() {
	// While a secret rotates, sign with the new and the old one.
	newSecret := webhooks.MustParseSecret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	oldSecret := webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	body := []byte(`{"test": 2432232314}`)

	h := webhooks.Headers("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), body, newSecret, oldSecret)
	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		fmt.Printf("%s: %s\n", name, h.Get(name))
	}
	// Output:
	// webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek
	// webhook-timestamp: 1614265330
	// webhook-signature: v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

func ExampleVerify() {
	secret := webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

	// A receiver reads the raw body and checks it before acting on it.
	receiver := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := webhooks.Verify(secret, r.Header, body, 0); err != nil {
			fmt.Println("rejected:", errors.Is(err, webhooks.ErrInvalidSignature))
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		fmt.Println("accepted")
	}

	body := `{"type":"order.executed"}`
	for _, sent := range []string{body, `{"type":"order.cancelled"}`} {
		req := httptest.NewRequest(http.MethodPost, "/webhooks", strings.NewReader(sent))
		// The headers are those of body, whatever was sent.
		req.Header = webhooks.Headers("msg_1", time.Now(), []byte(body), secret)
		receiver(httptest.NewRecorder(), req)
	}
	// Output:
	// accepted
	// rejected: true
}

func ExampleVerifyAt() {
	secret := webhooks.MustParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	body := []byte(`{"test": 2432232314}`)
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	sent := time.Unix(1614265330, 0)

	fmt.Println(webhooks.VerifyAt(secret, h, body, 0, sent.Add(time.Minute)))
	fmt.Println(webhooks.VerifyAt(secret, h, body, 0, sent.Add(10*time.Minute)))
	// Output:
	// <nil>
	// webhooks: timestamp too old: sent 10m0s ago, tolerance 5m0s
}

func ExampleSecret() {
	secret, err := webhooks.NewSecret()
	if err != nil {
		panic(err)
	}
	// String is for showing the secret once to its owner…
	fmt.Println(strings.HasPrefix(secret.String(), "whsec_"), len(secret.String()))

	// …everything else hides it.
	fmt.Println(secret)
	fmt.Printf("%+v %#v\n", secret, secret)
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log.Info("endpoint created", "secret", secret)
	// Output:
	// true 50
	// REDACTED
	// REDACTED webhooks.Secret{REDACTED}
	// level=INFO msg="endpoint created" secret=REDACTED
}
