package main

import (
	"time"

	"github.com/asyncgate/asyncgate/internal/listen"
)

// listenOptions are the timeouts and connection caps of every listener of
// a process (API, metrics, simulator).
type listenOptions struct {
	readHeader, read, write, idle time.Duration
	maxConns, maxConnsPerIP       int
}

func (l *listenOptions) register(cf *cmdFlags) {
	d := listen.Config{}.WithDefaults()
	g := cf.Group("Listeners")
	g.Duration(&l.readHeader, "read-header-timeout", d.ReadHeaderTimeout, "how long a client may take to send a request's headers")
	g.Duration(&l.read, "read-timeout", d.ReadTimeout, "how long a client may take to send a whole request, body included: a trickled body is cut off then")
	g.Duration(&l.write, "write-timeout", d.WriteTimeout, "how long an answer may take after the request's headers (a ?wait= long-poll extends it for itself)")
	g.Duration(&l.idle, "idle-timeout", d.IdleTimeout, "how long an idle keep-alive connection stays open")
	g.Int(&l.maxConns, "max-conns", d.MaxConns, 0, "N", "connections open at once per listener, more wait to be accepted; 0: no cap")
	g.Int(&l.maxConnsPerIP, "max-conns-per-ip", 0, 0, "N", "connections open at once from one client address, more are closed at once; 0: no cap (behind a load balancer all come from its addresses)")
}

// config is the listen.Config the flags ask for.
func (l *listenOptions) config() listen.Config {
	c := listen.Config{ReadHeaderTimeout: l.readHeader, ReadTimeout: l.read, WriteTimeout: l.write, IdleTimeout: l.idle,
		MaxConns: l.maxConns, MaxConnsPerIP: l.maxConnsPerIP}
	if c.MaxConns == 0 {
		c.MaxConns = -1 // listen.Config's none
	}
	return c
}
