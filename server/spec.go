package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate"
)

// openAPI serves the OpenAPI document the server was built with.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/yaml", asyncgate.OpenAPI)
}
