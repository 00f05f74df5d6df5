package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/asyncgate/asyncgate/internal/listen"
)

// Server is a [Sim] listening on a TCP address. Start it with [Sim.Start].
type Server struct {
	// URL is the base URL of both services, such as "http://127.0.0.1:9090".
	URL string

	hs   *http.Server
	done chan error
}

// Start listens on addr (such as ":9090", or "127.0.0.1:0" for a free port) and serves s in
// the background until [Server.Shutdown], with the default timeouts and caps of
// listen.Config. An address it cannot listen on is an error.
func (s *Sim) Start(addr string) (*Server, error) { return s.StartWith(addr, listen.Config{}) }

// StartWith is Start with the listener's timeouts and connection caps set by lc.
func (s *Sim) StartWith(addr string, lc listen.Config) (*Server, error) {
	ln, err := lc.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("sim: listen: %w", err)
	}
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("sim: listen: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	srv := &Server{
		URL:  "http://" + net.JoinHostPort(host, port),
		hs:   lc.Server(s),
		done: make(chan error, 1),
	}
	go func() { srv.done <- srv.hs.Serve(ln) }()
	return srv, nil
}

// Shutdown stops the server gracefully. When ctx ends first (a slow-drip answer can take
// long), it closes the remaining connections and returns ctx's error.
func (srv *Server) Shutdown(ctx context.Context) error {
	err := srv.hs.Shutdown(ctx)
	if err != nil {
		_ = srv.hs.Close()
	}
	if serveErr := <-srv.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}
