package chaos

import (
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

// TestReceiverVerify checks the receiver's own signature check against the sender's
// signatures, and that it refuses what it must: another secret, another body, another
// id, an old timestamp, a missing header. (A checker that accepted everything would
// report no bad signature ever.)
func TestReceiverVerify(t *testing.T) {
	secret, other := webhooks.MustParseSecret("whsec_"+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))),
		webhooks.MustParseSecret("whsec_"+base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")))
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"id":"evt_1","type":"order.executed","data":{"id":"o1"}}`)
	tests := []struct {
		name      string
		id, ts    string
		sig       string
		body      []byte
		wantValid bool
	}{
		{"signed", "msg_1", ts, webhooks.Sign("msg_1", now, body, secret), body, true},
		{"signed during a rotation", "msg_1", ts, webhooks.Sign("msg_1", now, body, other, secret), body, true},
		{"another secret", "msg_1", ts, webhooks.Sign("msg_1", now, body, other), body, false},
		{"another body", "msg_1", ts, webhooks.Sign("msg_1", now, body, secret), []byte(`{}`), false},
		{"another id", "msg_2", ts, webhooks.Sign("msg_1", now, body, secret), body, false},
		{"an hour old", "msg_1", strconv.FormatInt(now.Add(-time.Hour).Unix(), 10),
			webhooks.Sign("msg_1", now.Add(-time.Hour), body, secret), body, false},
		{"no signature", "msg_1", ts, "", body, false},
		{"no id", "", ts, webhooks.Sign("", now, body, secret), body, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verify(key, tt.id, tt.ts, tt.sig, tt.body); got != tt.wantValid {
				t.Errorf("verify = %v, want %v", got, tt.wantValid)
			}
		})
	}
}

func FuzzReceiverVerify(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	f.Add("msg_1", "1700000000", "v1,AAAA", []byte("{}"))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		verify(key, id, ts, sig, body) // must not panic
	})
}
