package server

import (
	"github.com/gin-gonic/gin"
)

// Durable answers (--durability strict).
//
// A handler that changed something sends its answer through
// answerDurably, after its last write (for an order: the store's create,
// then the enqueue): Deps.Durability.Sync runs first, and the answer goes
// out only once the writes are on disk or on replicas as promised.
//
// When Sync fails (replicas or the AOF fsync did not confirm within the
// timeout) the writes are in Redis's memory, but not known to be durable:
// the client gets 503 not_durable, never a false 2xx. The change stands on
// the running Redis: an order placed so runs to its end like any other
// (unless Redis is lost before its replicas or disk got it, when it is gone
// with it). So that an honest retry finds it rather than placing a second
// order, the 503 carries the resource's Location, and with an
// Idempotency-Key the answer the client would have had is recorded as usual:
// a retry with the key gets it, replayed, once the barrier passes (replays
// pass the barrier too, see answerFromRecord).
//
// With Durability nil (relaxed, or appendfsync always, where Redis's reply
// to each write already means it is on disk) answerDurably just sends.

// answerDurably sends the answer written by send once the request's writes
// are durable, or 503 not_durable with location (if not empty) as its
// Location. It reports whether the client gets send's answer.
func (s *Server) answerDurably(c *gin.Context, location string, send func()) bool {
	if s.deps.Durability == nil {
		send()
		return true
	}
	err := s.deps.Durability.Sync(c.Request.Context())
	if err == nil {
		send()
		return true
	}
	p := newProblem("not_durable", "the change was made but is not yet confirmed on disk or on replicas; "+
		"retry with the same Idempotency-Key to get its answer once it is, or look at Location when there is one")
	p.err = err
	s.log.WarnContext(c, "write not confirmed durable; answering 503", "err", err, "tenant", c.GetString(ctxTenant),
		"route", c.FullPath(), "request_id", c.GetString(ctxRequestID))
	if v, ok := c.Get(ctxIdempotency); ok {
		if r := v.(*idemRequest); r.owned() {
			// The answer goes to the held writer and is recorded for the
			// retry; the idempotency middleware sends p instead.
			send()
			r.unconfirmed = p
			return false
		}
	}
	if location != "" {
		c.Header("Location", location)
	}
	writeProblem(c, p)
	return false
}
