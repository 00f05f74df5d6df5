package webhooks_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/asyncgate/asyncgate/webhooks"
)

// The official Standard Webhooks Go library, which nobody here wrote, must
// accept what we send. It verifies against time.Now, so these tests sign with
// the current time.

func officialReceiver(t *testing.T, s webhooks.Secret) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(s.String())
	if err != nil {
		t.Fatalf("standardwebhooks.NewWebhook: %v", err)
	}
	return wh
}

func TestStandardWebhooksLibraryVerifiesOurHeaders(t *testing.T) {
	t.Parallel()

	oldSecret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	newSecret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	strangerSecret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_1","type":"order.executed","data":{"id":"ord_1","status":"executed"}}`)
	tampered := []byte(`{"id":"evt_1","type":"order.executed","data":{"id":"ord_1","status":"rejected"}}`)
	now := time.Now()

	tests := []struct {
		name     string
		header   http.Header
		receiver webhooks.Secret
		body     []byte
		wantErr  error // the library's sentinel; nil for success
	}{
		{name: "one secret", header: webhooks.Headers("msg_1", now, body, newSecret), receiver: newSecret, body: body},
		{name: "spec example secret", header: webhooks.Headers("msg_1", now, body, webhooks.MustParseSecret(specSecret)), receiver: webhooks.MustParseSecret(specSecret), body: body},
		{name: "rotation, receiver holds the new secret", header: webhooks.Headers("msg_2", now, body, newSecret, oldSecret), receiver: newSecret, body: body},
		{name: "rotation, receiver holds the old secret", header: webhooks.Headers("msg_2", now, body, newSecret, oldSecret), receiver: oldSecret, body: body},
		{name: "empty body", header: webhooks.Headers("msg_3", now, nil, newSecret), receiver: newSecret, body: []byte{}},
		{name: "tampered body", header: webhooks.Headers("msg_4", now, body, newSecret), receiver: newSecret, body: tampered, wantErr: standardwebhooks.ErrNoMatchingSignature},
		{name: "tampered body, rotation", header: webhooks.Headers("msg_4", now, body, newSecret, oldSecret), receiver: oldSecret, body: tampered, wantErr: standardwebhooks.ErrNoMatchingSignature},
		{name: "wrong secret", header: webhooks.Headers("msg_5", now, body, newSecret), receiver: oldSecret, body: body, wantErr: standardwebhooks.ErrNoMatchingSignature},
		{name: "wrong secret, rotation", header: webhooks.Headers("msg_5", now, body, newSecret, oldSecret), receiver: strangerSecret, body: body, wantErr: standardwebhooks.ErrNoMatchingSignature},
		{name: "stale", header: webhooks.Headers("msg_6", now.Add(-time.Hour), body, newSecret), receiver: newSecret, body: body, wantErr: standardwebhooks.ErrMessageTooOld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			err := officialReceiver(t, tt.receiver).Verify(tt.body, tt.header)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("official library rejected our headers %v: %v", tt.header, err)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("official library: error = %v, want %v", err, tt.wantErr)
			}

			// Our Verify agrees with the library on every case.
			ours := webhooks.Verify(tt.receiver, tt.header, tt.body, 0)
			if (ours == nil) != (err == nil) {
				t.Errorf("webhooks.Verify = %v, official library = %v", ours, err)
			}
		})
	}
}

func TestWeVerifyStandardWebhooksLibrarySignatures(t *testing.T) {
	t.Parallel()

	secret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	wh := officialReceiver(t, secret)
	body := []byte(`{"hello":"world"}`)
	now := time.Now()

	sig, err := wh.Sign("msg_lib", now, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := webhooks.Sign("msg_lib", now, body, secret); got != sig {
		t.Errorf("Sign = %q, official library signs %q", got, sig)
	}

	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, "msg_lib")
	h.Set(standardwebhooks.HeaderWebhookTimestamp, webhooks.Headers("msg_lib", now, body).Get(webhooks.HeaderTimestamp))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	if err := webhooks.Verify(secret, h, body, 0); err != nil {
		t.Errorf("Verify of the official library's signature: %v", err)
	}
	if err := webhooks.Verify(secret, h, append(body, ' '), 0); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("Verify of a tampered body = %v, want ErrInvalidSignature", err)
	}
}
