package server

import (
	"crypto/sha256"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"
)

var tenantRe = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// authenticate resolves "Authorization: Bearer <key>" to a tenant. Keys are
// looked up by their SHA-256, so the lookup time says nothing about how
// much of a guessed key was right.
func (s *Server) authenticate(c *gin.Context) {
	h := c.GetHeader("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || key == "" {
		c.Header("WWW-Authenticate", `Bearer realm="asyncgate"`)
		writeProblem(c, newProblem("unauthorized", "send your API key as 'Authorization: Bearer <key>'"))
		return
	}
	tenant, found := s.keys[sha256.Sum256([]byte(key))]
	if !found {
		c.Header("WWW-Authenticate", `Bearer realm="asyncgate", error="invalid_token"`)
		writeProblem(c, newProblem("unauthorized", "the API key is not valid"))
		return
	}
	c.Set(ctxTenant, tenant)
	c.Next()
}
