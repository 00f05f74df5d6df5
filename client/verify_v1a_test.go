package client_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/client"
	"github.com/asyncgate/asyncgate/webhooks"
)

// VerifyWebhook takes a v1a endpoint's public key ("whpk_…") and checks the
// v1a entries with it, in an http.Header, an AMQP table or NATS headers;
// a v1 secret still checks the v1 entries of the same header.
func TestVerifyWebhookPublicKey(t *testing.T) {
	t.Parallel()
	key, err := webhooks.SigningKeyFromSeed(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	secret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	pub := key.PublicKey().String()
	body := []byte(`{"id":"evt_1","type":"order.executed"}`)
	h := webhooks.Headers("evt_1", time.Now(), body, key, secret)
	table := map[string]any{}
	nats := map[string][]string{}
	for k, v := range h {
		table[k] = v[0]
		nats[k] = v
	}
	if err := client.VerifyWebhook(pub, h, body); err != nil {
		t.Errorf("http.Header: %v", err)
	}
	if err := client.VerifyWebhook(" "+pub+"\n", table, body); err != nil {
		t.Errorf("AMQP table: %v", err)
	}
	if err := client.VerifyWebhook(pub, nats, body); err != nil {
		t.Errorf("NATS header: %v", err)
	}
	if err := client.VerifyWebhook(secret.String(), h, body); err != nil {
		t.Errorf("the v1 secret beside it: %v", err)
	}
	if err := client.VerifyWebhook(pub, h, append(body, ' ')); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("tampered body: %v, want ErrInvalidSignature", err)
	}
	other, _ := webhooks.NewSigningKey()
	if err := client.VerifyWebhook(other.PublicKey().String(), h, body); !errors.Is(err, webhooks.ErrInvalidSignature) {
		t.Errorf("another public key: %v, want ErrInvalidSignature", err)
	}
	if err := client.VerifyWebhook("whpk_AAAA", http.Header{}, body); !errors.Is(err, webhooks.ErrInvalidPublicKey) {
		t.Errorf("bad public key: %v, want ErrInvalidPublicKey", err)
	}
}
