package admin

import (
	"math"
	"testing"
	"time"
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

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"}, {400 * time.Microsecond, "0.4ms"}, {340 * time.Millisecond, "340ms"},
		{1500 * time.Millisecond, "1.5s"}, {12 * time.Second, "12s"}, {time.Second, "1s"},
		{150 * time.Second, "2m30s"}, {65 * time.Second, "1m05s"}, {2 * time.Minute, "2m"},
		{2 * time.Hour, "2h"}, {65 * time.Minute, "1h05m"}, {76 * time.Hour, "3d4h"}, {48 * time.Hour, "2d"},
		{-1500 * time.Millisecond, "-1.5s"},
	} {
		if got := formatDuration(tt.in); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := formatMillis(1234.5); got != "1.2s" {
		t.Errorf("formatMillis(1234.5) = %q, want 1.2s", got)
	}
}
