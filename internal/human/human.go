// Package human formats values the way people read them, for the CLI's
// help and errors, the logs and the dashboard.
package human

import (
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Duration formats d as people read it and time.ParseDuration reads back:
// 1.5s, 250ms, 2h, 1h30m, 15m, 2m5s — no trailing zero units ("2h0m0s") and
// no nanosecond noise. Durations of a minute or more are rounded to the
// second; shorter ones keep at most two decimals of their unit.
func Duration(d time.Duration) string {
	if d < 0 {
		return "-" + Duration(-d)
	}
	if d == 0 {
		return "0s"
	}
	if d < time.Minute {
		unit, size := "s", time.Second
		switch {
		case d < time.Microsecond:
			return strconv.FormatInt(int64(d), 10) + "ns"
		case d < time.Millisecond:
			unit, size = "µs", time.Microsecond
		case d < time.Second:
			unit, size = "ms", time.Millisecond
		}
		v := float64(d) / float64(size)
		s := strconv.FormatFloat(v, 'f', 2, 64)
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		if s == "1000" { // 999.996ms rounds up to the next unit
			return Duration(size * 1000)
		}
		if unit == "s" && s == "60" {
			return "1m"
		}
		return s + unit
	}
	d = d.Round(time.Second)
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 {
		b.WriteString(strconv.FormatInt(int64(s), 10) + "s")
	}
	return b.String()
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that writes durations
// with Duration: "1.5s" instead of 1500000000 (JSON) or "1.5s"/"2h0m0s" (text).
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(Duration(a.Value.Duration()))
	}
	return a
}
