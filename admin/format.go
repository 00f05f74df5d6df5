package admin

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/human"
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

// formatMillis shows a duration given in milliseconds as people read it
// (human.Duration: 340ms, 1.5s, 2m5s, 2h).
func formatMillis(ms float64) string {
	return human.Duration(time.Duration(ms * float64(time.Millisecond)))
}
