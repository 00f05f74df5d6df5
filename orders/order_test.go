package orders_test

import (
	"errors"
	"testing"

	"github.com/asyncgate/asyncgate/orders"
)

func TestDecimalReason(t *testing.T) {
	for _, tt := range []struct {
		lit string
		ok  bool
	}{
		{"1", true}, {"2.5", true}, {"0.00000001", true}, {"1e-8", true}, {"1E-8", true},
		{"123456789012.123", true}, {"1e12", true}, {"100000000000000000000", true}, {"0", true},
		{"-2.50", true}, {"0.000000010000", true}, {"12.5e-7", true},
		{"0.000000001", false}, {"1e-9", false}, {"5e-324", false}, {"12.5e-8", false},
		{"1234567890123456", false}, {"0.100000000000000001", false}, {"1e99999", false},
	} {
		if got := orders.DecimalReason(tt.lit); (got == "") != tt.ok {
			t.Errorf("DecimalReason(%q) = %q, want ok=%v", tt.lit, got, tt.ok)
		}
	}
}

func TestValidateBoundsNumbers(t *testing.T) {
	price := func(p float64) *float64 { return &p }
	for _, tt := range []struct {
		name  string
		q     float64
		price *float64
		field string
	}{
		{"smallest double", 5e-324, nil, "quantity"},
		{"huge", 1e300, nil, "quantity"},
		{"nine decimals", 0.123456789, nil, "quantity"},
		{"float noise", 0.30000000000000004, nil, "quantity"},
		{"huge price", 1, price(1e300), "limit_price"},
		{"tiny price", 1, price(5e-324), "limit_price"},
		{"ok", 0.00000001, price(999999999999), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := orders.Request{AccountID: "acc-1", Symbol: "ACME", Side: orders.Buy, Quantity: tt.q, Type: orders.Market}
			if tt.price != nil {
				r.Type, r.LimitPrice = orders.Limit, tt.price
			}
			err := r.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *orders.ValidationError
			if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != tt.field {
				t.Fatalf("Validate = %v, want one error on %s", err, tt.field)
			}
		})
	}
}
