package server

import "github.com/gin-gonic/gin"

// adminPageRoutes registers the dashboard's HTML pages under /admin.
// Authentication and CSRF are applied by the group.
func (s *Server) adminPageRoutes(g *gin.RouterGroup) {}
