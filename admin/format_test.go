package admin

import (
	"math"
	"testing"
)

func TestFormatNumber(t *testing.T) {
	t.Parallel()
	f := 101.25
	for _, tt := range []struct {
		in   any
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1,000"}, {-1234567, "-1,234,567"},
		{int64(100000000), "100,000,000"},
		{1e8, "100,000,000"}, {2.5, "2.5"}, {1234.5, "1,234.5"}, {-0.001, "-0.001"},
		{1.0 / 3, "0.33333333"}, {1e21, "1,000,000,000,000,000,000,000"},
		{&f, "101.25"}, {(*float64)(nil), ""}, {math.Inf(1), "+Inf"}, {"x", ""},
	} {
		if got := formatNumber(tt.in); got != tt.want {
			t.Errorf("formatNumber(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatMillis(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   float64
		want string
	}{{0, "0s"}, {340, "340ms"}, {1500, "1.5s"}, {150000, "2m30s"}, {7.2e6, "2h"}} {
		if got := formatMillis(tt.in); got != tt.want {
			t.Errorf("formatMillis(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
