package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/webhooks"
)

// asyncgate receive accepts what the endpoint's secret signed, and refuses
// with 400 what another secret signed.
func TestReceiveVerifies(t *testing.T) {
	t.Parallel()
	good, _ := webhooks.NewSecret()
	other, _ := webhooks.NewSecret()
	file := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(file, []byte(good.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out proctest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"asyncgate", "receive", "--receive-addr", "127.0.0.1:0", "--secret-file", file}, &out, env(nil))
	}()
	t.Cleanup(func() { cancel(); <-done })
	re := regexp.MustCompile(`listening on (\S+)`)
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no URL in %q", out.String())
		} else {
			time.Sleep(10 * time.Millisecond) // poll the output with a deadline
		}
	}
	body := []byte(`{"id":"evt_1","type":"order.executed","data":{"id":"o1","status":"executed"}}`)
	for _, tt := range []struct {
		secret webhooks.Secret
		status int
		line   string
	}{
		{good, http.StatusOK, "verified order.executed evt_1: order o1 is executed"},
		{other, http.StatusBadRequest, "REJECTED msg_1 order.executed"},
	} {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		for k, v := range webhooks.Headers("msg_1", time.Now(), body, tt.secret) {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.status || !strings.Contains(out.String(), tt.line) {
			t.Errorf("status %d, want %d; output %q lacks %q", res.StatusCode, tt.status, out.String(), tt.line)
		}
	}
}
