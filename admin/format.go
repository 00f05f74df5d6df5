package admin

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// How the pages show figures: as people read them, not as Go prints them
// (100,000,000 rather than 1e+08; 1.5s or 2h rather than 1500.0 ms or
// 7200000 ms).

// formatNumber shows an integer or a float with thousands separators and
// no exponent; a float keeps the decimals it has (at most 8). Anything
// else shows as "".
func formatNumber(v any) string {
	switch x := v.(type) {
	case int:
		return groupInt(strconv.FormatInt(int64(x), 10))
	case int64:
		return groupInt(strconv.FormatInt(x, 10))
	case *float64:
		if x == nil {
			return ""
		}
		return formatFloat(*x)
	case float64:
		return formatFloat(x)
	}
	return ""
}

func formatFloat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i-1 > 8 {
		s = strings.TrimRight(strconv.FormatFloat(f, 'f', 8, 64), "0")
		s = strings.TrimSuffix(s, ".")
	}
	intPart, frac, _ := strings.Cut(s, ".")
	out := groupInt(intPart)
	if frac != "" {
		out += "." + frac
	}
	return out
}

// groupInt puts a comma between each group of three digits of an integer
// ("-1234567" → "-1,234,567").
func groupInt(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	if len(s) <= 3 {
		return sign + s
	}
	var b strings.Builder
	b.WriteString(sign)
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > len(sign) {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// formatMillis shows a duration given in milliseconds (see
// formatDuration).
func formatMillis(ms float64) string {
	return formatDuration(time.Duration(ms * float64(time.Millisecond)))
}

// formatDuration shows d in the largest units that fit, to about three
// significant figures: "0s", "0.4ms", "340ms", "1.5s", "12s", "2m30s",
// "2h", "1h05m", "3d4h".
func formatDuration(d time.Duration) string {
	if d < 0 {
		return "-" + formatDuration(-d)
	}
	trim := func(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }
	short := func(f float64) string { // 1 decimal under 10, none above
		if f < 10 {
			return strings.TrimSuffix(trim(f, 1), ".0")
		}
		return trim(math.Round(f), 0)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Millisecond:
		return strings.TrimSuffix(trim(float64(d)/float64(time.Millisecond), 2), "0") + "ms"
	case d < time.Second:
		return short(float64(d)/float64(time.Millisecond)) + "ms"
	case d < time.Minute:
		return short(float64(d)/float64(time.Second)) + "s"
	case d < time.Hour:
		d = d.Round(time.Second)
		m, s := d/time.Minute, (d%time.Minute)/time.Second
		if s == 0 {
			return strconv.Itoa(int(m)) + "m"
		}
		return strconv.Itoa(int(m)) + "m" + pad2(int(s)) + "s"
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		h, m := d/time.Hour, (d%time.Hour)/time.Minute
		if m == 0 {
			return strconv.Itoa(int(h)) + "h"
		}
		return strconv.Itoa(int(h)) + "h" + pad2(int(m)) + "m"
	}
	d = d.Round(time.Hour)
	days, h := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
	if h == 0 {
		return strconv.Itoa(int(days)) + "d"
	}
	return strconv.Itoa(int(days)) + "d" + strconv.Itoa(int(h)) + "h"
}

func pad2(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}
