package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

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
// validation error, which the server answers with 422).
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req orders.Request
		err := server.DecodeJSON(body, &req)
		if err == nil {
			err = req.Validate()
		}
		if err == nil {
			return
		}
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
	})
}
