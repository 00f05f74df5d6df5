package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/asyncgate/asyncgate/webhooks"
)

func TestAddrKind(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ip   string
		want string
	}{
		{"93.184.216.34", ""},
		{"2606:2800:220:1:248:1893:25c8:1946", ""},
		{"8.8.8.8", ""},
		{"127.0.0.1", webhooks.KindLoopback},
		{"127.255.0.9", webhooks.KindLoopback},
		{"::1", webhooks.KindLoopback},
		{"::ffff:127.0.0.1", webhooks.KindLoopback}, // IPv4-mapped
		{"10.1.2.3", webhooks.KindPrivate},
		{"172.16.0.1", webhooks.KindPrivate},
		{"172.31.255.255", webhooks.KindPrivate},
		{"172.32.0.1", ""},
		{"192.168.1.1", webhooks.KindPrivate},
		{"fd12:3456::1", webhooks.KindPrivate},
		{"169.254.169.254", webhooks.KindMetadata},
		{"::ffff:169.254.169.254", webhooks.KindMetadata},
		{"64:ff9b::a9fe:a9fe", webhooks.KindMetadata}, // NAT64 of 169.254.169.254
		{"2002:a9fe:a9fe::1", webhooks.KindMetadata},  // 6to4 of 169.254.169.254
		{"fd00:ec2::254", webhooks.KindMetadata},
		{"100.100.100.200", webhooks.KindMetadata},
		{"169.254.1.1", webhooks.KindLinkLocal},
		{"fe80::1", webhooks.KindLinkLocal},
		{"100.64.0.1", webhooks.KindCGNAT},
		{"100.127.255.254", webhooks.KindCGNAT},
		{"0.0.0.0", webhooks.KindUnspecified},
		{"::", webhooks.KindUnspecified},
		{"224.0.0.1", webhooks.KindMulticast},
		{"ff02::1", webhooks.KindMulticast},
		{"255.255.255.255", webhooks.KindReserved},
		{"192.0.2.1", webhooks.KindReserved},
		{"2001:db8::1", webhooks.KindReserved},
		{"::127.0.0.1", webhooks.KindLoopback}, // IPv4-compatible
	} {
		if got := webhooks.AddrKind(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("AddrKind(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	dns := newResolver(map[string]string{})
	dns.set("hooks.example.com", "93.184.216.34")
	dns.set("internal.example.com", "10.0.0.5")
	dns.set("mixed.example.com", "93.184.216.34", "10.0.0.5")
	dns.set("metadata.example.com", "169.254.169.254")
	dns.set("localhost", "127.0.0.1")
	dns.set("corp.example.com", "10.9.1.1")

	strict := webhooks.NewGuard(webhooks.GuardConfig{Resolver: dns})
	dev := webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true, Resolver: dns})
	allowList := webhooks.NewGuard(webhooks.GuardConfig{Resolver: dns, Allow: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}})

	for _, tt := range []struct {
		name    string
		guard   *webhooks.Guard
		url     string
		wantErr error  // nil: accepted
		detail  string // a part of the message
	}{
		{"public https", strict, "https://hooks.example.com/in", nil, ""},
		{"public https with port", strict, "https://hooks.example.com:8443/in?x=1", nil, ""},
		{"plain http", strict, "http://hooks.example.com/in", webhooks.ErrURLNotAllowed, "plain http"},
		{"loopback literal", strict, "https://127.0.0.1/in", webhooks.ErrURLNotAllowed, "127.0.0.1 is a loopback address"},
		{"loopback literal over http", webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true}), "http://127.0.0.1:8080/in", webhooks.ErrURLNotAllowed, "loopback"},
		{"metadata", webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true}), "http://169.254.169.254/latest/meta-data/", webhooks.ErrURLNotAllowed, "169.254.169.254 is a cloud metadata address"},
		{"IPv6 loopback", strict, "https://[::1]/in", webhooks.ErrURLNotAllowed, "loopback"},
		{"IPv4-mapped loopback", strict, "https://[::ffff:127.0.0.1]/in", webhooks.ErrURLNotAllowed, "loopback"},
		{"NAT64 metadata", strict, "https://[64:ff9b::a9fe:a9fe]/in", webhooks.ErrURLNotAllowed, "metadata"},
		{"name resolving to a private address", strict, "https://internal.example.com/in", webhooks.ErrURLNotAllowed, "10.0.0.5 is a private address (internal.example.com resolves to it)"},
		{"name resolving to a public and a private address", strict, "https://mixed.example.com/in", webhooks.ErrURLNotAllowed, "private"},
		{"name resolving to metadata", strict, "https://metadata.example.com/", webhooks.ErrURLNotAllowed, "metadata"},
		{"localhost", strict, "https://localhost/in", webhooks.ErrURLNotAllowed, "loopback"},
		{"sub.localhost", strict, "https://app.localhost/in", webhooks.ErrURLNotAllowed, "loopback"},
		{"carrier-grade NAT", strict, "https://100.64.0.1/", webhooks.ErrURLNotAllowed, "carrier-grade NAT"},
		{"unspecified", strict, "https://0.0.0.0/", webhooks.ErrURLNotAllowed, "unspecified"},
		{"unknown host", strict, "https://nowhere.example.com/", webhooks.ErrInvalidURL, "does not resolve"},
		{"not http", strict, "ftp://hooks.example.com/", webhooks.ErrInvalidURL, "https"},
		{"relative", strict, "/hooks", webhooks.ErrInvalidURL, ""},
		{"no host", strict, "https:///in", webhooks.ErrInvalidURL, "no host"},
		{"credentials", strict, "https://user:pw@hooks.example.com/", webhooks.ErrInvalidURL, "credentials"},
		{"fragment", strict, "https://hooks.example.com/in#x", webhooks.ErrInvalidURL, "fragment"},
		{"too long", strict, "https://hooks.example.com/" + strings.Repeat("a", 2100), webhooks.ErrInvalidURL, "longer"},
		{"control characters", strict, "https://hooks.example.com/\x7f", webhooks.ErrInvalidURL, ""},
		{"space in the path", strict, "https://hooks.example.com/a b", webhooks.ErrInvalidURL, "' ' at byte 27"},
		{"space in the query", strict, "https://hooks.example.com/in?x=a b", webhooks.ErrInvalidURL, "not allowed in a URL"},
		{"leading space", strict, " https://hooks.example.com/in", webhooks.ErrInvalidURL, ""},
		{"trailing space", strict, "https://hooks.example.com/in ", webhooks.ErrInvalidURL, ""},
		{"quote", strict, `https://hooks.example.com/"in"`, webhooks.ErrInvalidURL, ""},
		{"non-ASCII", strict, "https://hooks.example.com/caf\u00e9", webhooks.ErrInvalidURL, ""},
		{"bad escape", strict, "https://hooks.example.com/a%zz", webhooks.ErrInvalidURL, "two hex digits"},
		{"cut escape", strict, "https://hooks.example.com/a%2", webhooks.ErrInvalidURL, "two hex digits"},
		{"escaped space", strict, "https://hooks.example.com/a%20b?q=%C3%A9&r=[1]", nil, ""},

		{"dev: http to loopback", dev, "http://127.0.0.1:8080/in", nil, ""},
		{"dev: localhost", dev, "http://localhost:8080/in", nil, ""},
		{"dev: private", dev, "http://10.1.2.3/in", nil, ""},
		{"dev: IPv6 loopback", dev, "http://[::1]:9000/in", nil, ""},
		{"dev: metadata still refused", dev, "http://169.254.169.254/latest/meta-data/", webhooks.ErrURLNotAllowed, "metadata"},
		{"dev: link-local still refused", dev, "http://[fe80::1]/", webhooks.ErrURLNotAllowed, "link-local"},
		{"dev: carrier-grade NAT still refused", dev, "http://100.64.0.1/", webhooks.ErrURLNotAllowed, "carrier-grade NAT"},

		{"allow-list: listed range", allowList, "https://10.9.200.1/in", nil, ""},
		{"allow-list: name in listed range", allowList, "https://corp.example.com/in", nil, ""},
		{"allow-list: other private range", allowList, "https://10.8.0.1/in", webhooks.ErrURLNotAllowed, "private"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.guard.CheckURL(context.Background(), tt.url)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("CheckURL(%q) = %v, want nil", tt.url, err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("CheckURL(%q) = %v, want %v", tt.url, err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), tt.detail):
				t.Fatalf("CheckURL(%q) = %q, want it to say %q", tt.url, err, tt.detail)
			}
		})
	}
}

// TestDialRechecksAtConnect is DNS rebinding: a name that resolved to a
// public address at registration resolves to loopback at delivery time.
func TestDialRechecksAtConnect(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	dns := newResolver(map[string]string{})
	dns.set("rebind.example.com", "93.184.216.34")
	g := webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, Resolver: dns})
	if err := g.CheckURL(context.Background(), "http://rebind.example.com:"+port+"/in"); err != nil {
		t.Fatalf("registration: %v", err)
	}

	dns.set("rebind.example.com", "127.0.0.1")
	_, err = g.DialContext(context.Background(), "tcp", "rebind.example.com:"+port)
	if !errors.Is(err, webhooks.ErrURLNotAllowed) || !strings.Contains(err.Error(), "127.0.0.1 is a loopback address") {
		t.Fatalf("dial after rebinding = %v, want ErrURLNotAllowed naming 127.0.0.1", err)
	}
	// An IP literal is checked the same way.
	if _, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:"+port); !errors.Is(err, webhooks.ErrURLNotAllowed) {
		t.Fatalf("dial to a loopback literal = %v, want ErrURLNotAllowed", err)
	}

	// The same dial passes with a guard that allows loopback: the seam
	// really dials what the resolver says.
	open := webhooks.NewGuard(webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true, Resolver: dns})
	c, err := open.DialContext(context.Background(), "tcp", "rebind.example.com:"+port)
	if err != nil {
		t.Fatalf("dial with loopback allowed: %v", err)
	}
	c.Close()
	if n := accepted.Load(); n > 1 {
		t.Fatalf("the listener accepted %d connections, want at most the allowed one", n)
	}
}

func ExampleGuard_CheckURL() {
	g := webhooks.NewGuard(webhooks.GuardConfig{}) // production: https, public addresses
	for _, u := range []string{
		"http://example.com/hooks",
		"https://169.254.169.254/latest/meta-data/",
		"https://[::1]:8443/hooks",
		"https://10.0.0.7/hooks",
	} {
		fmt.Println(g.CheckURL(context.Background(), u))
	}
	// Output:
	// webhooks: URL not allowed: plain http is not allowed; use https
	// webhooks: URL not allowed: 169.254.169.254 is a cloud metadata address
	// webhooks: URL not allowed: ::1 is a loopback address
	// webhooks: URL not allowed: 10.0.0.7 is a private address
}

// FuzzCheckURL: CheckURL never panics, and what it accepts is an absolute
// https URL whose host, when it is an address, is a public one.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/in", "https://127.0.0.1/", "https://[::ffff:169.254.169.254]/", "http://x",
		"https://[fe80::1%25eth0]/", "https://0x7f.1/", "https://2130706433/", "https://user@hooks.example.com/", "%",
	} {
		f.Add(s)
	}
	dns := newResolver(map[string]string{})
	dns.set("hooks.example.com", "93.184.216.34")
	g := webhooks.NewGuard(webhooks.GuardConfig{Resolver: dns})
	f.Fuzz(func(t *testing.T, raw string) {
		if g.CheckURL(context.Background(), raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.User != nil {
			t.Fatalf("accepted %q", raw)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && webhooks.AddrKind(ip) != "" {
			t.Fatalf("accepted %q, whose host is a %s address", raw, webhooks.AddrKind(ip))
		}
	})
}
