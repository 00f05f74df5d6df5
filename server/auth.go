package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/apikeys"
)

var tenantRe = apikeys.TenantPattern

// KeyStore holds the API keys issued with `asyncgate keys create`.
type KeyStore interface {
	// Lookup returns the key whose secret has this SHA-256, or
	// apikeys.ErrNotFound.
	Lookup(ctx context.Context, hash [sha256.Size]byte) (*apikeys.Key, error)
	// Touch records that k was used at t; a revoked key is left alone.
	Touch(ctx context.Context, k *apikeys.Key, t time.Time) error
}

// principal is who sent a request: its API key and the key's tenant.
type principal struct {
	id     string // the key's id: static keys have "config:" and a hash prefix
	tenant string
	name   string
	admin  bool
}

const ctxPrincipal = "principal"

// touchEvery is how often, at most, a key's last use is written.
const touchEvery = time.Minute

// authenticate resolves "Authorization: Bearer <key>" to a principal. Keys
// are looked up by their SHA-256, in the configured keys, then in the key
// cache, then in the KeyStore: neither lookup time nor a comparison says
// how much of a guessed key was right, and a stored key's hash is compared
// again in constant time.
func (s *Server) authenticate(c *gin.Context) {
	if s.bearer(c, "send your API key as 'Authorization: Bearer <key>'") != nil {
		c.Next()
	}
}

// bearer resolves the request's Bearer key to its principal and puts it on
// the context; on a missing or invalid key it answers the 401 problem
// (hint says how to authenticate) and returns nil.
//
// It runs before anything reads the request's body, and a 401 never reads
// it (see writeProblem).
func (s *Server) bearer(c *gin.Context, hint string) *principal {
	key, ok := bearerToken(c.GetHeader("Authorization"))
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="asyncgate"`)
		writeProblem(c, newProblem("unauthorized", hint))
		return nil
	}
	p, err := s.principal(c.Request.Context(), apikeys.Hash(key))
	if err != nil {
		writeProblem(c, err)
		return nil
	}
	if p == nil {
		c.Header("WWW-Authenticate", `Bearer realm="asyncgate", error="invalid_token"`)
		writeProblem(c, newProblem("unauthorized", "the API key is not valid"))
		return nil
	}
	c.Set(ctxPrincipal, p)
	c.Set(ctxTenant, p.tenant)
	return p
}

// bearerToken returns the token of an Authorization header of the Bearer
// scheme. The scheme is case-insensitive (RFC 9110, section 11.1), and
// spaces may separate it from the token.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// principal returns the principal of the key with this hash, nil for none.
func (s *Server) principal(ctx context.Context, hash [sha256.Size]byte) (*principal, error) {
	if p, ok := s.keys[hash]; ok {
		return p, nil
	}
	if s.deps.Keys == nil {
		return nil, nil
	}
	now := s.cfg.Now()
	e := s.keyCache.get(hash, now)
	if e == nil {
		k, err := s.deps.Keys.Lookup(ctx, hash)
		switch {
		case errors.Is(err, apikeys.ErrNotFound):
			k = nil
		case err != nil:
			return nil, fmt.Errorf("authenticate: %w", err)
		case !apikeys.Equal(k.Hash, hash):
			return nil, fmt.Errorf("authenticate: key store answered for another key")
		}
		e = s.keyCache.put(hash, k, now)
	}
	if e.p == nil {
		return nil, nil
	}
	s.touch(ctx, e, now)
	return e.p, nil
}

// touch writes the key's last use, in the background, at most once per
// touchEvery per key and process.
func (s *Server) touch(ctx context.Context, e *keyEntry, now time.Time) {
	last := e.touched.Load()
	if now.UnixNano()-last < int64(touchEvery) || !e.touched.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.deps.Keys.Touch(ctx, e.key, now); err != nil {
			s.log.WarnContext(ctx, "record the API key's last use", "key_id", e.key.ID, "tenant", e.key.Tenant, "err", err)
		}
	}()
}

// keyCache remembers KeyStore answers, found or not, for a while, so that
// authentication costs no Redis round trip on the hot path. A revoked key
// keeps working until its entry expires (Config.KeyCacheTTL).
type keyCache struct {
	ttl time.Duration
	max int

	mu sync.RWMutex
	m  map[[sha256.Size]byte]*keyEntry
}

type keyEntry struct {
	key     *apikeys.Key // nil: no such key
	p       *principal
	expires time.Time
	touched atomic.Int64 // unix ns of the last Touch sent
}

func (c *keyCache) get(hash [sha256.Size]byte, now time.Time) *keyEntry {
	c.mu.RLock()
	e := c.m[hash]
	c.mu.RUnlock()
	if e == nil || now.After(e.expires) {
		return nil
	}
	return e
}

func (c *keyCache) put(hash [sha256.Size]byte, k *apikeys.Key, now time.Time) *keyEntry {
	e := &keyEntry{key: k, expires: now.Add(c.ttl)}
	if k != nil {
		e.p = &principal{id: k.ID, tenant: k.Tenant, name: k.Name, admin: k.Admin}
		e.touched.Store(k.LastUsedAt.UnixNano())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[hash]; old != nil {
		e.touched.Store(max(e.touched.Load(), old.touched.Load()))
	}
	if len(c.m) >= c.max {
		for h, x := range c.m {
			if now.After(x.expires) {
				delete(c.m, h)
			}
		}
		if len(c.m) >= c.max { // a flood of distinct keys: start over
			clear(c.m)
		}
	}
	c.m[hash] = e
	return e
}

// staticPrincipal is the principal of a key from Config.APIKeys or
// Config.AdminKeys.
func staticPrincipal(key, tenant string, admin bool) *principal {
	h := apikeys.Hash(key)
	return &principal{id: "config:" + hex.EncodeToString(h[:6]), tenant: tenant, name: "configured", admin: admin}
}
