package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// Whoami is the answer of GET /admin/api/whoami: the admin key that asked.
type Whoami struct {
	KeyID  string `json:"key_id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name,omitempty"`
	Admin  bool   `json:"admin"`
}

// whoami is the first admin route, a placeholder that shows which key
// called: the dashboard and the admin API mount beside it, behind the same
// requireAdmin.
func (s *Server) whoami(c *gin.Context) {
	p := c.MustGet(ctxPrincipal).(*principal)
	writeJSON(c, http.StatusOK, "application/json", Whoami{KeyID: p.id, Tenant: p.tenant, Name: p.name, Admin: p.admin})
}
