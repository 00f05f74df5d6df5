package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/orders"
)

// Idempotency of POST requests under /v1.
//
// A POST with "Idempotency-Key: <1-255 printable ASCII characters>" claims
// the key for the tenant, in Redis, before the handler runs:
//
//   - The claim holds the request's fingerprint and is set only if the key
//     is free (SET NX GET), with a short TTL (Config.IdempotencyClaimTTL):
//     a process that dies mid-request frees the key by itself. It travels
//     in one pipeline with the rate limiter's script (ratelimit.go).
//   - A 2xx, 404 or 409 answer replaces the claim for Config.IdempotencyTTL:
//     status, the Content-Type, Location and Retry-After headers, and body.
//     Validation problems (400, 413, 415, 422) and 5xx are not recorded:
//     the claim is taken back, and the client may fix or retry the request
//     under the same key. A 5xx because Redis was away may find the release
//     failing too: it is retried in the background (releaser.go) until
//     Redis answers, so the key is free about a second after Redis is back,
//     not when the claim's TTL ends. A claim whose SET failed on our side
//     (the reply was lost) is released the same way.
//   - A later request with the key and the same fingerprint gets the
//     recorded answer again, with "Idempotent-Replayed: true"; with another
//     fingerprint, 422 idempotency_key_reused (even while the first is in
//     flight); with the same one while the first is in flight, 409
//     idempotency_key_in_use and Retry-After: 1.
//
// The answer goes to the client at once; the recorder (recorder.go) writes
// it in the background, batched with those of concurrent requests, and
// serves it from memory to this process until it is written.
//
// The fingerprint (see Fingerprint) covers the method, the path and the
// body in a canonical form.
//
// Placing an order binds the key in the same write as the order: the
// store's create script replaces our claim with a binding, {"fp", "order"}
// (orders.Binding), kept for Config.IdempotencyTTL, and that binding is the
// record: nothing else is written. A later request with the key and the
// same fingerprint gets the 202 rebuilt from the order as it was accepted
// (its order.created event), replayed; so a process killed after storing
// the order but before answering cannot make a retry place it again, and
// the accept path writes no record after the order.
//
// Registering a webhook endpoint binds the key the same way
// (webhooks.Binding), its value being the 201 answer itself (the
// endpoint and its secret, as a recorded answer holds them): the answer is
// known only once the store made the endpoint's id and secret.
//
// One window remains for the other requests that change something: a
// process that dies after the handler changed it but before the answer was
// written leaves only its claim, which expires; a retry then runs the
// request again. Cancelling an order is idempotent by itself (a second
// cancel request answers as the first did); the others (rotating a secret,
// disabling or enabling an endpoint, redelivering) act again, as a request
// without a key does.

const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
	ctxIdempotency       = "idempotency"
)

// replayedHeaders are the headers of an answer that are recorded and
// replayed; the others (X-Request-Id, RateLimit-*) belong to each request.
var replayedHeaders = []string{"Content-Type", "Location", "Retry-After"}

// idemRecord is what Redis holds under an idempotency key: a claim while
// Status is 0, the recorded answer after. It is stored as its JSON, then,
// for an answer, a newline and the body as it was sent.
type idemRecord struct {
	Fingerprint string `json:"fp"`
	Token       string `json:"tok,omitempty"`
	// Order is set in a binding: the order the key placed (see above).
	Order  string            `json:"order,omitempty"`
	Status int               `json:"status,omitempty"`
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"-"`
}

func (rec *idemRecord) encode() string {
	meta, _ := json.Marshal(rec) // strings and ints always encode
	var b strings.Builder
	b.Grow(len(meta) + 1 + len(rec.Body))
	b.Write(meta)
	b.WriteByte('\n')
	b.Write(rec.Body)
	return b.String()
}

func decodeRecord(v string) (idemRecord, error) {
	meta, body, _ := strings.Cut(v, "\n") // JSON escapes newlines in strings
	var rec idemRecord
	if err := json.Unmarshal([]byte(meta), &rec); err != nil {
		return rec, fmt.Errorf("decode idempotency record: %w", err)
	}
	rec.Body = []byte(body)
	return rec, nil
}

// idemRequest is one request's use of an idempotency key.
type idemRequest struct {
	s        *Server
	tenant   string
	key      string // the Redis key
	fp       string
	claimVal string
	claim    *redis.StringCmd // SET NX GET: redis.Nil when the claim is ours
	// The answer to record, and its encoding: set when the handler's
	// status is one that is recorded.
	answer *idemRecord
	record string
	// unconfirmed is set by answerDurably when the handler's writes were
	// not confirmed durable: its answer is recorded, the client gets this.
	unconfirmed *Problem
	// bound is set once the handler's write bound the key to what it
	// created (binding): the binding is the record, and stays.
	bound bool
}

// idemRequestOf returns the request's use of an idempotency key when the
// request holds the key's claim, or nil.
func (s *Server) idemRequestOf(c *gin.Context) *idemRequest {
	if v, ok := c.Get(ctxIdempotency); ok {
		if r := v.(*idemRequest); r.owned() {
			return r
		}
	}
	return nil
}

// binding is the store's binding of r's key to the order orderID: the key
// goes from r's claim to {"fp", "order"} for Config.IdempotencyTTL. Zero
// (no binding) for a nil r.
func (r *idemRequest) binding(orderID string) orders.Binding {
	if r == nil {
		return orders.Binding{}
	}
	// Hex and a UUID: nothing to escape.
	return orders.Binding{Key: r.key, Claim: r.claimVal, Value: `{"fp":"` + r.fp + `","order":"` + orderID + `"}`, TTL: r.s.cfg.IdempotencyTTL}
}

// setBound records whether the store bound r's key (nil-safe).
func (r *idemRequest) setBound(bound bool) {
	if r != nil {
		r.bound = bound
	}
}

// validIdempotencyKey reports whether k is 1-255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// prepareIdempotency reads the Idempotency-Key of a POST under /v1 and,
// when there is one, the body to fingerprint. It returns nil when the
// request does not use idempotency. The claim is sent later, by rateLimit
// (with the limiter's script) or by idempotency.
func (s *Server) prepareIdempotency(c *gin.Context, p *principal) (*idemRequest, error) {
	if s.deps.RedisClient == nil || c.Request.Method != http.MethodPost || !strings.HasPrefix(c.FullPath(), "/v1/") {
		return nil, nil
	}
	vals := c.Request.Header.Values(headerIdempotencyKey)
	if len(vals) == 0 {
		return nil, nil
	}
	if len(vals) > 1 || !validIdempotencyKey(vals[0]) {
		return nil, newProblem("malformed_request", "Idempotency-Key must be one value of 1-255 printable ASCII characters")
	}
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, problemf("malformed_request", "could not read the body: %v", err)
	}
	if int64(len(body)) > s.cfg.MaxBodyBytes {
		// Too large: the handler answers 413, which is not recorded.
		c.Request.Body = readCloser{io.MultiReader(bytes.NewReader(body), c.Request.Body), c.Request.Body}
		return nil, nil
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	r := &idemRequest{s: s, tenant: p.tenant, key: s.redisKeys.idempotency(p.tenant, vals[0]), fp: Fingerprint(c.Request.Method, c.Request.URL.Path, body)}
	// Hex and base36: nothing to escape.
	r.claimVal = `{"fp":"` + r.fp + `","tok":"` + strconv.FormatUint(rand.Uint64(), 36) + `"}`
	c.Set(ctxIdempotency, r)
	return r, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// claimCmd returns the claim, to be sent by the caller.
func (r *idemRequest) claimCmd(ctx context.Context) []redis.Cmder {
	r.claim = redis.NewStringCmd(ctx, "set", r.key, r.claimVal, "px", r.s.cfg.IdempotencyClaimTTL.Milliseconds(), "nx", "get")
	return []redis.Cmder{r.claim}
}

// owned reports whether the claim was sent and is ours. It is ours when
// the key was free, or when it holds our own claim: the SET NX GET was
// executed, then sent again by the client's retry of a failed pipeline.
func (r *idemRequest) owned() bool {
	if r.claim == nil {
		return false
	}
	prev, err := r.claim.Result()
	return errors.Is(err, redis.Nil) || (err == nil && prev == r.claimVal)
}

// finishScript replaces our claim (ARGV[1]) with the answer (ARGV[2], for
// ARGV[3] ms), or deletes it when ARGV[2] is empty. A claim that expired
// and was taken by another request is left alone.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1`)

// release takes our claim back, so that the key can be used again. It
// writes at once, before the client has the answer, so that the client's
// retry finds the key free: this is off the hot path (429, validation
// problems, 5xx). When Redis cannot be reached, the releaser tries again
// in the background until it can (releaser.go).
func (r *idemRequest) release() {
	if r.bound || !r.owned() {
		return
	}
	r.forceRelease()
}

// forceRelease releases the claim whether or not this request knows it
// holds it: after a claim whose answer was lost, the claim may be in Redis.
// The script deletes the key only if it holds this request's claim.
func (r *idemRequest) forceRelease() {
	expires := time.Now().Add(r.s.cfg.IdempotencyClaimTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := finishScript.Run(ctx, r.s.deps.RedisClient, []string{r.key}, r.claimVal, "", 0).Err(); err != nil {
		r.s.log.Warn("release an idempotency claim; retrying in the background", "err", err, "tenant", r.tenant)
		r.s.releaser.add(r.key, r.claimVal, expires)
	}
}

// recorded reports whether an answer with this status is kept for replays.
func recorded(status int) bool {
	return status < 400 || status == http.StatusNotFound || status == http.StatusConflict
}

// idempotency is the middleware after rateLimit: it claims the request's
// Idempotency-Key (unless rateLimit did), answers from the record when the
// key is taken, and records the handler's answer.
func (s *Server) idempotency(c *gin.Context) {
	v, ok := c.Get(ctxIdempotency)
	if !ok {
		c.Next()
		return
	}
	r := v.(*idemRequest)
	ctx := c.Request.Context()
	if r.claim == nil { // no rate limit: the claim alone
		s.deps.RedisClient.Process(ctx, r.claimCmd(ctx)[0])
	}
	prev, err := r.claim.Result()
	switch {
	case r.owned():
	case err != nil:
		// The claim may have been set and only its answer lost: take it
		// back, or the client's retry would find the key in use.
		r.forceRelease()
		writeProblem(c, fmt.Errorf("claim idempotency key: %w", err))
		return
	default:
		s.answerFromRecord(c, r, prev)
		return
	}

	bw := &heldWriter{ResponseWriter: c.Writer, status: http.StatusOK}
	c.Writer = bw
	defer func() {
		if v := recover(); v != nil {
			c.Writer = bw.ResponseWriter
			r.release()
			panic(v)
		}
	}()
	c.Next()
	c.Writer = bw.ResponseWriter

	switch {
	case r.bound:
		// The binding, written with the order, is the record.
		if r.unconfirmed != nil {
			s.sendUnconfirmed(c, r)
			return
		}
	case !recorded(bw.status):
		r.release()
		if r.unconfirmed != nil { // not an answer answerDurably sends; never a false one
			s.sendUnconfirmed(c, r)
			return
		}
	default:
		r.answer = &idemRecord{Fingerprint: r.fp, Status: bw.status, Body: bw.buf.Bytes(), Header: make(map[string]string, len(replayedHeaders))}
		for _, h := range replayedHeaders {
			if v := bw.Header().Get(h); v != "" {
				r.answer.Header[h] = v
			}
		}
		r.record = r.answer.encode()
		// The recorder writes it in the background; until it is written,
		// this process answers replays from memory.
		s.recorder.add(r)
		if r.unconfirmed != nil {
			// Not durable yet: a retry with the key gets the recorded
			// answer once the barrier passes; this client gets 503.
			s.sendUnconfirmed(c, r)
			return
		}
	}
	c.Writer.WriteHeader(bw.status)
	c.Writer.Write(bw.buf.Bytes())
}

// sendUnconfirmed sends r's 503 not_durable in place of the held answer,
// keeping only its Location.
func (s *Server) sendUnconfirmed(c *gin.Context, r *idemRequest) {
	h := c.Writer.Header()
	h.Del("Content-Type")
	h.Del("Retry-After")
	writeProblem(c, r.unconfirmed)
}

// answerFromRecord answers a request whose key is taken: by the recorded
// answer, or with a problem.
func (s *Server) answerFromRecord(c *gin.Context, r *idemRequest, prev string) {
	rec, err := decodeRecord(prev)
	if err != nil {
		writeProblem(c, err)
		return
	}
	if rec.claim() && rec.Fingerprint == r.fp {
		// A claim: maybe of a request of this process that has answered,
		// whose answer is still in the recorder; or was, and has been
		// written (or bound) since the claim was read.
		if done := s.recorder.lookup(prev); done != nil {
			rec = *done.answer
		} else if cur, err := s.deps.RedisClient.Get(c.Request.Context(), r.key).Result(); err == nil && cur != prev {
			if now, err := decodeRecord(cur); err == nil && !now.claim() {
				rec = now
			}
		}
	}
	switch {
	case rec.Fingerprint != r.fp:
		writeProblem(c, newProblem("idempotency_key_reused",
			"this Idempotency-Key was used for another request (method, path or body); use a new key for a new request"))
	case rec.claim():
		c.Header("Retry-After", "1")
		writeProblem(c, newProblem("idempotency_key_in_use",
			"a request with this Idempotency-Key is still being processed; retry after Retry-After seconds"))
	default:
		// A replay says the change is there: under --durability strict it
		// waits for the barrier like the first answer (which may have been
		// a 503 not_durable).
		if s.deps.Durability != nil {
			if err := s.deps.Durability.Sync(c.Request.Context()); err != nil {
				p := newProblem("not_durable", "the change this Idempotency-Key made is not yet confirmed on disk or on replicas; retry after Retry-After seconds")
				p.err = err
				writeProblem(c, p)
				return
			}
		}
		if rec.Order != "" {
			bound, err := s.boundAnswer(c.Request.Context(), r.tenant, rec)
			if err != nil {
				writeProblem(c, err)
				return
			}
			rec = bound
		}
		h := c.Writer.Header()
		for k, v := range rec.Header {
			h.Set(k, v)
		}
		h.Set(headerReplayed, "true")
		c.Status(rec.Status)
		c.Writer.Write(rec.Body)
		c.Abort()
	}
}

// claim reports whether rec is a claim: neither an answer nor a binding.
func (rec *idemRecord) claim() bool { return rec.Status == 0 && rec.Order == "" }

// boundAnswer is the answer to the request that placed the order of the
// binding rec: 202 with the order as it was accepted, as accepted sends it.
func (s *Server) boundAnswer(ctx context.Context, tenant string, rec idemRecord) (idemRecord, error) {
	evs, err := s.deps.Orders.Events(ctx, tenant, rec.Order)
	if err != nil {
		return rec, fmt.Errorf("read the order of an idempotency key: %w", err)
	}
	if len(evs) == 0 || evs[0].Type != orders.EventCreated || evs[0].Order == nil {
		return rec, fmt.Errorf("read the order of an idempotency key: order %s has no order.created event first", rec.Order)
	}
	body, err := json.Marshal(evs[0].Order)
	if err != nil {
		return rec, fmt.Errorf("encode the order of an idempotency key: %w", err)
	}
	return idemRecord{Fingerprint: rec.Fingerprint, Status: http.StatusAccepted, Body: body, Header: map[string]string{
		"Content-Type": "application/json",
		"Location":     "/v1/orders/" + rec.Order,
		"Retry-After":  s.retryAfter(),
	}}, nil
}

// heldWriter holds the handler's answer back until it is recorded.
type heldWriter struct {
	gin.ResponseWriter
	status  int
	written bool
	buf     bytes.Buffer
}

func (w *heldWriter) WriteHeader(code int) {
	if code > 0 && !w.written {
		w.status = code
	}
}
func (w *heldWriter) WriteHeaderNow()             { w.written = true }
func (w *heldWriter) Write(b []byte) (int, error) { w.written = true; return w.buf.Write(b) }
func (w *heldWriter) WriteString(s string) (int, error) {
	w.written = true
	return w.buf.WriteString(s)
}
func (w *heldWriter) Status() int                         { return w.status }
func (w *heldWriter) Size() int                           { return w.buf.Len() }
func (w *heldWriter) Written() bool                       { return w.written }
func (w *heldWriter) Flush()                              {}
func (w *heldWriter) Unwrap() http.ResponseWriter         { return w.ResponseWriter }
func (w *heldWriter) ReadFrom(r io.Reader) (int64, error) { w.written = true; return w.buf.ReadFrom(r) }

// Fingerprint identifies a request for idempotency: the hex SHA-256 of the
// method, the path and the canonical body. The canonical body is
//
//   - empty when the body is empty or only white space;
//   - for a body that is one JSON value: the value re-encoded by
//     encoding/json, compact, object keys sorted, strings escaped the same
//     way whatever their original escapes, numbers as written (so 1 and
//     1.0 differ), the last of duplicate keys kept (as the decoder keeps
//     it);
//   - otherwise the body byte for byte.
//
// So re-serializing the same JSON with other white space or key order is
// the same request; changing any value is another.
func Fingerprint(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(canonicalBody(body))
	return hex.EncodeToString(h.Sum(nil))
}

func canonicalBody(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	// The two forms are tagged apart: a raw body must never equal the
	// canonical form of a JSON one.
	raw := func() []byte { return append([]byte{'r'}, body...) }
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw()
	}
	if _, err := dec.Token(); err != io.EOF {
		return raw() // trailing data
	}
	b, err := json.Marshal(v)
	if err != nil {
		return raw()
	}
	return append([]byte{'j'}, b...)
}
