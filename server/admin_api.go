package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// adminAPIRoutes registers the admin API under /admin/api. Authentication
// (Bearer admin key or session cookie, CSRF) is applied by the group.
func (s *Server) adminAPIRoutes(api *gin.RouterGroup) {
	api.GET("/whoami", s.whoami)
	api.GET("/breakers", s.apiBreakers)
	if s.deps.AdminOrders == nil {
		return
	}
	api.GET("/stats", s.apiStats)
	api.GET("/orders", s.apiOrders)
	api.GET("/orders/:tenant/:id", s.apiOrder)
	if !s.hasWebhookAdmin() {
		return
	}
	api.GET("/endpoints", s.apiEndpoints)
	api.POST("/endpoints/:tenant/:id/enable", s.apiEnableEndpoint)
	api.GET("/deliveries/:tenant/:id", s.apiDelivery)
	api.POST("/deliveries/:tenant/:id/redeliver", s.apiRedeliver)
	if s.deps.Queues != nil {
		api.GET("/deliveries", s.apiFailedDeliveries)
	}
}

func (s *Server) apiBreakers(c *gin.Context) {
	writeJSON(c, http.StatusOK, "application/json", AdminBreakers{Breakers: s.breakers(c.Request.Context())})
}

func (s *Server) apiStats(c *gin.Context) {
	st, err := s.stats(c.Request.Context())
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", st)
}

func (s *Server) apiOrders(c *gin.Context) {
	q, p := parseOrderQuery(c)
	if p != nil {
		writeProblem(c, p)
		return
	}
	list, err := s.searchOrders(c.Request.Context(), q)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", list)
}

func (s *Server) apiOrder(c *gin.Context) {
	d, err := s.orderDetail(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", d)
}

func (s *Server) apiEndpoints(c *gin.Context) {
	tenant, p := parseTenantQuery(c)
	if p != nil {
		writeProblem(c, p)
		return
	}
	list, err := s.endpoints(c.Request.Context(), tenant)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", list)
}

func (s *Server) apiEnableEndpoint(c *gin.Context) {
	ep, err := s.adminEnableEndpoint(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", ep)
}

func (s *Server) apiFailedDeliveries(c *gin.Context) {
	q, p := parseDeliveryQuery(c)
	if p != nil {
		writeProblem(c, p)
		return
	}
	list, err := s.failedDeliveries(c.Request.Context(), q)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", list)
}

func (s *Server) apiDelivery(c *gin.Context) {
	d, err := s.adminDelivery(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", d)
}

func (s *Server) apiRedeliver(c *gin.Context) {
	tenant, id := c.Param("tenant"), c.Param("id")
	d, err := s.redeliver(c.Request.Context(), tenant, id)
	if err != nil {
		writeProblem(c, err)
		return
	}
	c.Header("Location", "/admin/api/deliveries/"+tenant+"/"+id)
	writeJSON(c, http.StatusAccepted, "application/json", d)
}
