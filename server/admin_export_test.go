package server

import "github.com/gin-gonic/gin"

// RoutesOf lists the routes s serves, for the tests that walk every admin
// route (admin_auth_test.go).
func RoutesOf(s *Server) gin.RoutesInfo { return s.h.Routes() }
