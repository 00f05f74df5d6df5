package server

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// deadlineSlack is how long past its wait a long-poll may take to answer.
const deadlineSlack = 5 * time.Second

// outlast moves the connection's deadlines past a long-poll of wait, so
// that the listener's read and write timeouts (a few seconds) do not cut
// it: the write timeout would drop the answer, and the read timeout would
// end the request's context (the server reads ahead on the connection
// while the handler runs). A request with a body keeps its read deadline:
// it is still the bound on a trickled body. Servers without deadlines
// (httptest recorders) are left alone.
func outlast(c *gin.Context, wait time.Duration) {
	rc := http.NewResponseController(c.Writer)
	until := time.Now().Add(wait + deadlineSlack)
	_ = rc.SetWriteDeadline(until)
	if c.Request.ContentLength == 0 {
		_ = rc.SetReadDeadline(until)
	}
}

// dropBody closes a refused request's connection after the answer, without
// reading the body still on its way: a client without a valid key cannot
// hold a connection open by trickling a body (nor make the server read up
// to 256 KiB of it, as it does to reuse a connection).
func dropBody(c *gin.Context) {
	if c.Request.ContentLength == 0 {
		return
	}
	c.Header("Connection", "close")
	_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now())
}
