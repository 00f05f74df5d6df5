package server

import "github.com/gin-gonic/gin"

// csrfToken returns the CSRF token a page must send back with a
// state-changing request (form field "csrf_token" or header
// "X-CSRF-Token"); "" when the request is not authenticated by the session
// cookie (a Bearer key needs none).
func (s *Server) csrfToken(c *gin.Context) string { return "" }
