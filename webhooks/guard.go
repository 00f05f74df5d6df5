package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrURLNotAllowed is returned, wrapped, for a webhook URL that the Guard
// refuses: a scheme other than https (or http when allowed), or a host that
// is, or resolves to, an address webhooks may not reach. The message says
// which address and why; it never holds a secret.
var ErrURLNotAllowed = errors.New("webhooks: URL not allowed")

// ErrInvalidURL is returned, wrapped, for text that is not a usable
// absolute http(s) or broker URL, or whose host does not resolve. The
// message never repeats the URL (it may hold a password).
var ErrInvalidURL = errors.New("webhooks: invalid URL")

// MaxURLLength is the longest endpoint URL accepted.
const MaxURLLength = 2048

// Resolver looks up the addresses of a host name. *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// GuardConfig configures a Guard. The zero value is the strict production
// guard: https only, public addresses only.
type GuardConfig struct {
	// AllowHTTP accepts plain http URLs. Defaults to false (https only).
	AllowHTTP bool
	// AllowPrivate accepts loopback (127.0.0.0/8, ::1) and private
	// (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7) addresses, so
	// that a developer can point webhooks at a local receiver. Link-local,
	// cloud metadata, carrier-grade NAT and the other special ranges stay
	// refused. Defaults to false.
	AllowPrivate bool
	// Allow lists address ranges accepted whatever their kind, for
	// operators whose receivers live on an internal network. Defaults to
	// none.
	Allow []netip.Prefix
	// Resolver looks host names up, at registration and at every connect.
	// Defaults to net.DefaultResolver.
	Resolver Resolver
	// DialTimeout bounds one TCP connect. Defaults to 10s.
	DialTimeout time.Duration
}

// Guard keeps webhooks from reaching what they must not: it is asyncgate's
// defence against server-side request forgery, where an integrator
// registers a URL that points into asyncgate's own network (a metadata
// service, an admin port on localhost, a private database).
//
// It checks twice. CheckURL, at registration, refuses a URL whose host is,
// or resolves to, a refused address. DialContext, at every delivery,
// resolves again, checks every address, and dials the checked address
// itself, with a net.Dialer whose Control hook checks the address once more
// just before the socket connects: a host whose DNS answer changed after
// registration (DNS rebinding) is refused at connect time.
type Guard struct {
	cfg    GuardConfig
	dialer net.Dialer
}

// NewGuard returns a guard.
func NewGuard(cfg GuardConfig) *Guard {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	g := &Guard{cfg: cfg}
	g.dialer = net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second, Control: g.control}
	return g
}

// CheckURL checks a URL for registration: it must be an absolute https URL
// (or http when allowed) of at most MaxURLLength bytes, with a host, no
// user info and no fragment, or a broker URL (amqp, amqps, nats, tls; see
// parseTarget), which may hold credentials; and its host must be a public
// address or resolve only to allowed ones. It must also parse strictly
// (see strictURL): Go's parser lets through spaces and other characters
// that RFC 3986 forbids, and a client would send them escaped somewhere
// else. It returns an error wrapping ErrInvalidURL or ErrURLNotAllowed.
func (g *Guard) CheckURL(ctx context.Context, raw string) error {
	if err := strictURL(raw); err != nil {
		return err
	}
	u, err := g.parse(raw)
	if err != nil {
		return err
	}
	_, err = g.resolve(ctx, u.Hostname())
	return err
}

// strictURL refuses text with a character that RFC 3986 does not allow in a
// URI (a space, a control character, a quote, <>\^`{|}, non-ASCII) or a
// '%' not followed by two hex digits. Deliveries do not apply it: a URL
// registered before it existed keeps working.
func strictURL(raw string) error {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return fmt.Errorf("%w: '%%' at byte %d is not followed by two hex digits", ErrInvalidURL, i)
			}
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~:/?#[]@!$&'()*+,;=", c) >= 0:
		default:
			return fmt.Errorf("%w: character %q at byte %d is not allowed in a URL (escape it)", ErrInvalidURL, c, i)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parse checks what can be checked without DNS. Deliveries call it too:
// their URL may predate a change of configuration.
func (g *Guard) parse(raw string) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, unwrapURLError(err))
	}
	broker := isBrokerScheme(u.Scheme)
	switch {
	case u.Scheme == "http" && !g.cfg.AllowHTTP:
		return nil, fmt.Errorf("%w: plain http is not allowed; use https", ErrURLNotAllowed)
	case u.Scheme == "" && u.Opaque == "" && u.Host == "":
		return nil, fmt.Errorf("%w: must be an absolute URL: https://, amqp(s)://…?exchange= or nats:// (tls://)…?subject=", ErrInvalidURL)
	case u.Scheme != "https" && u.Scheme != "http" && !broker:
		return nil, fmt.Errorf("%w: unknown scheme %q: use https, amqp, amqps, nats or tls", ErrInvalidURL, u.Scheme)
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%w: has no host", ErrInvalidURL)
	case u.User != nil && !broker:
		return nil, fmt.Errorf("%w: must not hold credentials (user info)", ErrInvalidURL)
	case u.Fragment != "" || strings.HasSuffix(raw, "#"):
		return nil, fmt.Errorf("%w: must not have a fragment", ErrInvalidURL)
	}
	if broker {
		if _, err := parseTarget(u); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// resolve returns the addresses of host, all checked. An IP literal is its
// own address; a name is looked up. It refuses the host if any of its
// addresses is refused: the answer a later connect gets may be any of them.
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := g.checkAddr(ip); err != nil {
			return nil, err
		}
		return []netip.Addr{ip}, nil
	}
	if strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".localhost") || strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		// RFC 6761: localhost names are loopback, whatever DNS says.
		if err := g.checkAddr(netip.IPv6Loopback()); err != nil {
			return nil, fmt.Errorf("%w: %s names the loopback interface", ErrURLNotAllowed, host)
		}
	}
	ips, err := g.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && !dnsErr.IsTemporary && !dnsErr.IsTimeout {
			return nil, fmt.Errorf("%w: host %s does not resolve", ErrInvalidURL, host)
		}
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: host %s does not resolve", ErrInvalidURL, host)
	}
	for _, ip := range ips {
		if err := g.checkAddr(ip); err != nil {
			return nil, fmt.Errorf("%w (%s resolves to it)", err, host)
		}
	}
	return ips, nil
}

// DialContext dials addr ("host:port") the way deliveries must: it resolves
// host with the guard's resolver, refuses the connection if any address is
// refused, and dials the checked addresses in turn; the dialer's Control
// hook checks each address again just before connecting. Use it as an
// http.Transport's DialContext.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		c, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// control is the net.Dialer Control hook: the last check, on the very
// address the socket is about to connect to.
func (g *Guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot check address %q", ErrURLNotAllowed, address)
	}
	return g.checkAddr(ap.Addr())
}

// checkAddr refuses an address of a kind webhooks may not reach, unless the
// configuration allows it.
func (g *Guard) checkAddr(ip netip.Addr) error {
	ip = ip.WithZone("")
	for _, p := range g.cfg.Allow {
		if p.Contains(ip.Unmap()) || p.Contains(ip) {
			return nil
		}
	}
	kind := AddrKind(ip)
	switch {
	case kind == "":
		return nil
	case g.cfg.AllowPrivate && (kind == KindLoopback || kind == KindPrivate):
		return nil
	}
	return fmt.Errorf("%w: %s is a %s address", ErrURLNotAllowed, ip, kind)
}

// Kinds of addresses that the Guard refuses, as AddrKind names them.
const (
	KindUnspecified = "unspecified"
	KindLoopback    = "loopback"
	KindPrivate     = "private"
	KindLinkLocal   = "link-local"
	KindMetadata    = "cloud metadata"
	KindCGNAT       = "carrier-grade NAT"
	KindMulticast   = "multicast"
	KindReserved    = "reserved"
)

// special lists the refused ranges. Metadata comes before link-local, which
// contains most of it, so that the message names the sharper kind.
var special = []struct {
	kind     string
	prefixes []netip.Prefix
}{
	{KindMetadata, prefixes(
		"169.254.169.254/32", // AWS, GCP, Azure, OpenStack, DigitalOcean…
		"169.254.170.2/32",   // AWS ECS task metadata
		"100.100.100.200/32", // Alibaba Cloud
		"fd00:ec2::254/128",  // AWS over IPv6
	)},
	{KindUnspecified, prefixes("0.0.0.0/8", "::/128")},
	{KindLoopback, prefixes("127.0.0.0/8", "::1/128")},
	{KindPrivate, prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")},
	{KindLinkLocal, prefixes("169.254.0.0/16", "fe80::/10")},
	{KindCGNAT, prefixes("100.64.0.0/10")},
	{KindMulticast, prefixes("224.0.0.0/4", "ff00::/8")},
	{KindReserved, prefixes(
		"192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"100::/64", "2001:db8::/32", "2001::/32", // discard, documentation, Teredo (hides an IPv4 address)
	)},
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// Ranges of IPv6 that embed an IPv4 address, which is checked in their stead.
var (
	nat64   = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052: the last 32 bits
	nat64L  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215, local use
	sixTo4  = netip.MustParsePrefix("2002::/16")      // RFC 3056: bits 16 to 48
	compat4 = netip.MustParsePrefix("::/96")          // deprecated IPv4-compatible
)

// AddrKind returns the kind of a refused address (one of the Kind
// constants), or "" for a public unicast address. IPv4-mapped,
// IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
// address they carry.
func AddrKind(ip netip.Addr) string {
	if !ip.IsValid() {
		return KindReserved
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip), compat4.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
			return AddrKind(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(ip):
			return AddrKind(netip.AddrFrom4([4]byte(b[2:6])))
		case nat64L.Contains(ip):
			return KindReserved
		}
	}
	for _, s := range special {
		for _, p := range s.prefixes {
			if p.Contains(ip) {
				return s.kind
			}
		}
	}
	if ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return KindReserved
	}
	return ""
}

// unwrapURLError drops url.Error's quoting of the whole URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
