package app

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"
)

// startPprofListener serves Go's profiles on PprofAddr (opt-in). A CPU
// profile or trace streams for as long as its seconds parameter asks, so
// this listener's write timeout is a minute longer than the longest one
// allowed (pprofMaxSeconds); its read and idle timeouts are the others'.
func (a *App) startPprofListener() error {
	if a.cfg.PprofAddr == "" {
		return nil
	}
	ln, err := a.cfg.Listen.Listen(a.cfg.PprofAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", capSeconds(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", capSeconds(pprof.Trace))
	a.pprofLn = ln
	a.pprofSrv = a.cfg.Listen.Server(mux)
	a.pprofSrv.WriteTimeout = pprofMaxSeconds*time.Second + time.Minute
	a.cfg.Logger.Info("serving Go profiles", "addr", ln.Addr().String())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.pprofSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.cfg.Logger.Error("pprof server stopped", "err", err)
		}
	}()
	return nil
}

// PprofURL is the profile listener's base URL once listening ("" without
// PprofAddr).
func (a *App) PprofURL() string {
	if a.pprofLn == nil {
		return ""
	}
	return listenURL(a.pprofLn.Addr().(*net.TCPAddr))
}

// pprofMaxSeconds bounds a profile's or trace's seconds parameter.
const pprofMaxSeconds = 120

// capSeconds refuses a seconds parameter above pprofMaxSeconds.
func capSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s := r.URL.Query().Get("seconds"); s != "" {
			if n, err := strconv.Atoi(s); err != nil || n < 1 || n > pprofMaxSeconds {
				http.Error(w, "seconds: a whole number from 1 to "+strconv.Itoa(pprofMaxSeconds), http.StatusBadRequest)
				return
			}
		}
		h(w, r)
	}
}
