package server

import "github.com/gin-gonic/gin"

// adminAPIRoutes registers the admin API under /admin/api. Authentication
// (Bearer admin key or session cookie, CSRF) is applied by the group.
func (s *Server) adminAPIRoutes(api *gin.RouterGroup) {
	api.GET("/whoami", s.whoami)
}
