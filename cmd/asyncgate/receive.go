package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/asyncgate/asyncgate/webhooks"
)

const receiveSynopsis = `Runs a webhook receiver for trying asyncgate out: it verifies each POST's Standard Webhooks
signature with the secrets in --secret-file (read at every request, so the file can be written
after the endpoint is registered, or gain a rotated secret) and prints one line per event.
A bad signature gets 400.`

// runReceive runs the trial webhook receiver.
func runReceive(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	cf := newCmdFlags("receive", getenv)
	g := cf.Group("Receiver")
	var addr, secretFile string
	g.String(&addr, "receive-addr", "ADDR", "127.0.0.1:9000", "listen address; 127.0.0.1:0 picks a free port")
	g.String(&secretFile, "secret-file", "PATH", "secret.txt", "file of the endpoint's whsec_ secrets, one per line")
	if err := cf.Parse(args, stdout, receiveSynopsis); err != nil {
		return err
	}
	if cf.envErr != nil {
		return cf.envErr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--receive-addr: %w", err)
	}
	var mu sync.Mutex // one printed line at a time
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "POST a webhook", http.StatusBadRequest)
			return
		}
		verr := verifyWithFile(secretFile, r.Header, body)
		var ev struct {
			ID, Type string
			Data     struct{ ID, Status string }
		}
		json.Unmarshal(body, &ev)
		mu.Lock()
		defer mu.Unlock()
		if verr != nil {
			fmt.Fprintf(stdout, "REJECTED %s %s: %v\n", r.Header.Get("webhook-id"), ev.Type, verr)
			http.Error(w, verr.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(stdout, "verified %s %s: order %s is %s\n", ev.Type, ev.ID, ev.Data.ID, ev.Data.Status)
	})}
	fmt.Fprintf(stdout, "webhook receiver listening on http://%s/hooks\n", ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// verifyWithFile verifies a webhook with any of the secrets in the file.
func verifyWithFile(path string, h http.Header, body []byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("no secrets to verify with: %w", err)
	}
	err = errors.New("no secret in " + path)
	for _, line := range strings.Fields(string(b)) {
		s, perr := webhooks.ParseSecret(line)
		if perr != nil {
			return fmt.Errorf("%s: %w", path, perr)
		}
		if err = webhooks.Verify(s, h, body, webhooks.DefaultTolerance); err == nil {
			return nil
		}
	}
	return err
}
