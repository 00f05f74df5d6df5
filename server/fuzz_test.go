package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

func FuzzIdempotencyFingerprint(f *testing.F) {
	f.Add("POST", "/v1/orders", []byte(`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market"}`))
	f.Add("POST", "/v1/orders", []byte(`{"b":1,"a":[1,2.50,{"z":null,"y":"\u00e9"}]}`))
	f.Add("POST", "/v1/orders/0190f1a2-7b3c-7d4e-8f90-123456789abc/cancel", []byte(""))
	f.Add("POST", "/v1/orders", []byte("  \n"))
	f.Add("POST", "/v1/orders", []byte(`{"a":1} trailing`))
	f.Add("POST", "/v1/orders", []byte(`1e999`))
	f.Add("POST", "/v1/orders", []byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		fp := server.Fingerprint(method, path, body)
		if len(fp) != 64 {
			t.Fatalf("fingerprint %q is not 64 hex digits", fp)
		}
		if again := server.Fingerprint(method, path, bytes.Clone(body)); again != fp {
			t.Fatalf("not deterministic: %s then %s", fp, again)
		}
		if server.Fingerprint(method+"X", path, body) == fp || server.Fingerprint(method, path+"/x", body) == fp {
			t.Fatal("the method or the path does not count")
		}
		if !json.Valid(body) {
			return
		}
		// White space does not count in JSON.
		var indented, compact bytes.Buffer
		if err := json.Indent(&indented, body, " ", "\t"); err != nil {
			t.Fatal(err)
		}
		if err := json.Compact(&compact, body); err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{indented.Bytes(), compact.Bytes(), append([]byte("\n "), body...)} {
			if got := server.Fingerprint(method, path, b); got != fp {
				t.Fatalf("%q and %q differ only in white space but have fingerprints %s and %s", body, b, fp, got)
			}
		}
		// A change of value does.
		var v any
		if json.Unmarshal(body, &v) == nil {
			changed, _ := json.Marshal([]any{v})
			if server.Fingerprint(method, path, changed) == fp {
				t.Fatalf("%q and %q have the same fingerprint", body, changed)
			}
		}
	})
}

// FuzzDecodeOrder: whatever the body, decoding and validating an order
// never panics, and every error is a client error (a 4xx problem or a
// validation error, which the server answers with 422). What it accepts is
// what was sent: no string gains a U+FFFD the body did not hold (invalid
// UTF-8 and half surrogate pairs are refused, not replaced), numbers are
// within bounds and exact, and the order survives a round trip through
// JSON unchanged.
func FuzzDecodeOrder(f *testing.F) {
	for _, s := range []string{
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market"}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"sell","quantity":2.5,"type":"limit","limit_price":101.25,"client_order_id":"c-1","callback_url":"https://example.com/h","metadata":{"k":"v"}}`,
		`{"account_id":1}`,
		`{"quantity":"ten"}`,
		`{"quantity":1e400}`,
		`{"metadata":{"k":{"nested":true}}}`,
		`{"unknown":1}`,
		`{"account_id":"a"} {}`,
		`[]`,
		`null`,
		`{"account_id":"\ud800"}`,
		``,
		`{`,
		"{\"account_id\":\"acc-1\",\"symbol\":\"ACME\",\"side\":\"buy\",\"quantity\":1,\"type\":\"market\",\"metadata\":{\"k\":\"\xff\"}}",
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market","metadata":{"k":"\ud83d\ude00","l":"\ude00"}}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market","metadata":{"k":null}}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market","metadata":null}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":5e-324,"type":"market"}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1e300,"type":"market"}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":0.00000001,"type":"limit","limit_price":999999999999.99}`,
		`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1.5e-7,"type":"limit","limit_price":1.00000000000000001}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := server.DecodeOrder(body)
		if err != nil {
			var p *server.Problem
			var ve *orders.ValidationError
			switch {
			case errors.As(err, &p):
				if p.Status < 400 || p.Status > 499 || p.Code == "" || p.Detail == "" {
					t.Fatalf("problem %+v for %q: want a 4xx with a code and a detail", p, body)
				}
			case errors.As(err, &ve):
				if len(ve.Fields) == 0 {
					t.Fatalf("validation error without fields for %q", body)
				}
			default:
				t.Fatalf("error %T %v for %q is neither a problem nor a validation error", err, err, body)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		if !bytes.Contains(body, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`)) {
			strs := []string{req.AccountID, req.Symbol, req.ClientOrderID, req.CallbackURL}
			for k, v := range req.Metadata {
				strs = append(strs, k, v)
			}
			for _, s := range strs {
				if strings.ContainsRune(s, utf8.RuneError) {
					t.Fatalf("%q decoded with a U+FFFD the body does not hold: %q", body, s)
				}
			}
		}
		nums := []float64{req.Quantity}
		if req.LimitPrice != nil {
			nums = append(nums, *req.LimitPrice)
		}
		for _, n := range nums {
			if !(n > 0 && n <= 1e12) || orders.DecimalReason(strconv.FormatFloat(n, 'f', -1, 64)) != "" {
				t.Fatalf("accepted the number %v from %q", n, body)
			}
		}
		again, _ := json.Marshal(req)
		back, err := server.DecodeOrder(again)
		if err != nil {
			t.Fatalf("%q was accepted but its re-encoding %s is refused: %v", body, again, err)
		}
		if diff := cmp.Diff(req, back, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed the order (-first +again):\n%s", body, diff)
		}
	})
}
