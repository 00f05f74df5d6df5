package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/listen"
)

// listenOptions are the timeouts and connection caps of every listener
// (API, metrics, simulator).
type listenOptions struct {
	readHeader, read, write, idle time.Duration
	maxConns, maxConnsPerIP       int
}

// register adds the flags through newFlags' helpers, which read ASYNCGATE_* too.
func (l *listenOptions) register(dur func(*time.Duration, string, time.Duration, string), integer func(*int, string, int, string)) {
	d := listen.Config{}.WithDefaults()
	dur(&l.readHeader, "read-header-timeout", d.ReadHeaderTimeout, "how long a client may take to send a request's headers")
	dur(&l.read, "read-timeout", d.ReadTimeout, "how long a client may take to send a whole request, body included; a trickled body is cut off then")
	dur(&l.write, "write-timeout", d.WriteTimeout, "how long an answer may take from the end of the request's headers (a ?wait= long-poll extends it for itself)")
	dur(&l.idle, "idle-timeout", d.IdleTimeout, "how long an idle keep-alive connection stays open")
	integer(&l.maxConns, "max-conns", d.MaxConns, "connections open at once per listener; more wait to be accepted; 0: no cap")
	integer(&l.maxConnsPerIP, "max-conns-per-ip", 0, "connections open at once from one client address, more are closed at once; 0: no cap (behind a load balancer all come from its addresses)")
}

// config is the listen.Config the flags ask for.
func (l *listenOptions) config() listen.Config {
	c := listen.Config{ReadHeaderTimeout: l.readHeader, ReadTimeout: l.read, WriteTimeout: l.write, IdleTimeout: l.idle,
		MaxConns: l.maxConns, MaxConnsPerIP: l.maxConnsPerIP}
	if c.MaxConns == 0 {
		c.MaxConns = -1
	}
	return c
}

// envName is the ASYNCGATE_* variable of a flag.
func envName(flagName string) string {
	return "ASYNCGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// durFlag returns a helper adding positive-duration flags to fs whose
// defaults come from env (a flag name and its default to the value of its
// ASYNCGATE_* variable); bad values from the environment go to *envErr.
func durFlag(fs *flag.FlagSet, env func(name, def string) string, envErr *error) func(*time.Duration, string, time.Duration, string) {
	return func(p *time.Duration, n string, def time.Duration, usage string) {
		fs.Func(n, usage+" (env "+envName(n)+", default "+def.String()+")", func(s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return fmt.Errorf("want a positive duration such as 30s")
			}
			*p = d
			return nil
		})
		*p = def
		if v := env(n, ""); v != "" {
			if err := fs.Set(n, v); err != nil {
				*envErr = errors.Join(*envErr, fmt.Errorf("%s: %v", envName(n), err))
			}
		}
	}
}

// intFlag is durFlag for integer flags.
func intFlag(fs *flag.FlagSet, env func(name, def string) string, envErr *error) func(*int, string, int, string) {
	return func(p *int, n string, def int, usage string) {
		fs.IntVar(p, n, def, usage+" (env "+envName(n)+")")
		if v := env(n, ""); v != "" {
			if err := fs.Set(n, v); err != nil {
				*envErr = errors.Join(*envErr, fmt.Errorf("%s: %v", envName(n), err))
			}
		}
	}
}
