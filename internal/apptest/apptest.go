// Package apptest serves an app.App over HTTP for tests: it builds and
// starts the App (without listening), serves its handler on an
// httptest.Server and stops both when the test ends.
//
// Tests of package server cannot use it (internal/app imports server);
// tests in package server_test can.
package apptest

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/app"
)

// ShutdownTimeout is how long the App has to stop when the test ends.
const ShutdownTimeout = 10 * time.Second

// Serve builds an App from cfg and serves it as Start does. It fails the
// test at once if the App cannot be built.
func Serve(t testing.TB, cfg app.Config) (a *app.App, url string) {
	t.Helper()
	a, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, Start(t, a)
}

// Start starts a, built by app.New (for tests that touch it in between),
// serves its handler on a loopback port and returns the server's URL. It
// fails the test at once if a cannot start. When the test ends the server
// is closed, then a is shut down within ShutdownTimeout.
func Start(t testing.TB, a *app.App) (url string) {
	t.Helper()
	if err := a.Start(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		a.Shutdown(ctx)
	})
	return srv.URL
}
