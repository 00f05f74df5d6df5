// Package listen makes the HTTP listeners of every asyncgate process (the
// API, the metrics port, the simulator) hard to hold open: timeouts on
// reading the request head and body, on writing the answer and on idle
// keep-alive connections, and caps on the connections open at once, in
// total and from one peer address.
//
// A handler that legitimately answers late (the ?wait= long-poll) moves
// its own deadlines with http.ResponseController.
package listen

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// Config configures a listener and its http.Server. Zero fields take their
// defaults; a negative timeout or cap means none.
type Config struct {
	// ReadHeaderTimeout bounds reading a request's line and headers.
	// Defaults to 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included, from its
	// first byte: a client trickling its body is cut off then. Defaults to 10s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the answer, from the end of the request's
	// headers. Long-polls extend it for themselves. Defaults to 30s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request
	// for this long. Defaults to 30s.
	IdleTimeout time.Duration
	// MaxConns caps the connections open at once; more wait in the
	// kernel's accept queue. Defaults to 4096.
	MaxConns int
	// MaxConnsPerIP caps the connections open at once from one peer
	// address; more are closed at once. Defaults to none: behind a load
	// balancer every connection comes from a few addresses.
	MaxConnsPerIP int
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	def(&c.ReadHeaderTimeout, 5*time.Second)
	def(&c.ReadTimeout, 10*time.Second)
	def(&c.WriteTimeout, 30*time.Second)
	def(&c.IdleTimeout, 30*time.Second)
	if c.MaxConns == 0 {
		c.MaxConns = 4096
	}
	return c
}

// Server returns an http.Server for h with c's timeouts.
func (c Config) Server(h http.Handler) *http.Server {
	c = c.WithDefaults()
	pos := func(d time.Duration) time.Duration { return max(d, 0) }
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: pos(c.ReadHeaderTimeout),
		ReadTimeout:       pos(c.ReadTimeout),
		WriteTimeout:      pos(c.WriteTimeout),
		IdleTimeout:       pos(c.IdleTimeout),
	}
}

// Listen listens on the TCP address addr with c's connection caps.
func (c Config) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.Wrap(ln), nil
}

// Wrap puts c's connection caps on ln.
func (c Config) Wrap(ln net.Listener) net.Listener {
	c = c.WithDefaults()
	if c.MaxConnsPerIP > 0 {
		ln = &perPeer{Listener: ln, max: c.MaxConnsPerIP, open: make(map[netip.Addr]int)}
	}
	if c.MaxConns > 0 {
		ln = netutil.LimitListener(ln, c.MaxConns)
	}
	return ln
}

// perPeer closes at once a connection from a peer address that already
// has max open. (netutil.LimitListener caps only the total.)
type perPeer struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (l *perPeer) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peer(c.RemoteAddr())
		l.mu.Lock()
		if l.open[ip] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &peerConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *perPeer) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// peer is the address a connection comes from; every non-TCP connection
// counts as one peer.
func peer(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

type peerConn struct {
	net.Conn
	l    *perPeer
	ip   netip.Addr
	once sync.Once
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
