package human

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{1500 * time.Millisecond, "1.5s"},
		{2 * time.Hour, "2h"},
		{90 * time.Minute, "1h30m"},
		{15 * time.Minute, "15m"},
		{125 * time.Second, "2m5s"},
		{30 * time.Second, "30s"},
		{250 * time.Millisecond, "250ms"},
		{1234567 * time.Nanosecond, "1.23ms"},
		{999996 * time.Microsecond, "1s"},
		{59999 * time.Millisecond, "1m"},
		{61*time.Minute + 400*time.Millisecond, "1h1m"},
		{1500 * time.Nanosecond, "1.5µs"},
		{7, "7ns"},
		{-2 * time.Second, "-2s"},
		{36 * time.Hour, "36h"},
	} {
		got := Duration(tt.d)
		if got != tt.want {
			t.Errorf("Duration(%d) = %q, want %q", tt.d, got, tt.want)
		}
		back, err := time.ParseDuration(got)
		if err != nil {
			t.Errorf("Duration(%d) = %q does not parse back: %v", tt.d, got, err)
		}
		if diff := back - tt.d; diff < -time.Second || diff > time.Second {
			t.Errorf("Duration(%d) = %q reads back as %v", tt.d, got, back)
		}
	}
}

func FuzzDuration(f *testing.F) {
	f.Add(int64(1500 * time.Millisecond))
	f.Add(int64(2 * time.Hour))
	f.Fuzz(func(t *testing.T, n int64) {
		if n == -1<<63 {
			return
		}
		d := time.Duration(n)
		s := Duration(d)
		back, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("Duration(%d) = %q: %v", n, s, err)
		}
		// Rounded to a second at most, or to 1% of the value below a minute.
		tol := time.Second
		if a := max(d, -d); a < time.Minute {
			tol = a/100 + 1
		}
		if diff := back - d; diff < -tol || diff > tol {
			t.Fatalf("Duration(%d) = %q reads back as %d", n, s, back)
		}
	})
}

func TestReplaceAttr(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
	log.Info("retry", "delay", 1500*time.Millisecond, slog.Group("g", slog.Duration("wait", 2*time.Hour)), "n", 3)
	for _, want := range []string{`"delay":"1.5s"`, `"wait":"2h"`, `"n":3`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("log line %s lacks %s", b.String(), want)
		}
	}
}
