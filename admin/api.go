package admin

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/server"
)

// adminAPIRoutes registers the admin API under /admin/api. Authentication
// (Bearer admin key or session cookie, CSRF) is applied by the group.
func (a *Dashboard) adminAPIRoutes(api *gin.RouterGroup) {
	api.GET("/whoami", a.whoami)
	api.GET("/breakers", a.apiBreakers)
	if a.deps.Orders == nil {
		return
	}
	api.GET("/stats", a.apiStats)
	api.GET("/orders", a.apiOrders)
	api.GET("/orders/:tenant/:id", a.apiOrder)
	if !a.hasWebhookAdmin() {
		return
	}
	api.GET("/endpoints", a.apiEndpoints)
	api.POST("/endpoints/:tenant/:id/enable", a.apiEnableEndpoint)
	api.GET("/deliveries/:tenant/:id", a.apiDelivery)
	api.POST("/deliveries/:tenant/:id/redeliver", a.apiRedeliver)
	if a.deps.Queues != nil {
		api.GET("/deliveries", a.apiFailedDeliveries)
	}
}

func (a *Dashboard) apiBreakers(c *gin.Context) {
	server.WriteJSON(c, http.StatusOK, "application/json", Breakers{Breakers: a.breakers(c.Request.Context())})
}

func (a *Dashboard) apiStats(c *gin.Context) {
	st, err := a.stats(c.Request.Context())
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", st)
}

func (a *Dashboard) apiOrders(c *gin.Context) {
	q, p := parseOrderQuery(c)
	if p != nil {
		server.WriteProblem(c, p)
		return
	}
	list, err := a.searchOrders(c.Request.Context(), q)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", list)
}

func (a *Dashboard) apiOrder(c *gin.Context) {
	d, err := a.orderDetail(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", d)
}

func (a *Dashboard) apiEndpoints(c *gin.Context) {
	tenant, p := parseTenantQuery(c)
	if p != nil {
		server.WriteProblem(c, p)
		return
	}
	list, err := a.endpoints(c.Request.Context(), tenant)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", list)
}

func (a *Dashboard) apiEnableEndpoint(c *gin.Context) {
	ep, err := a.adminEnableEndpoint(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", ep)
}

func (a *Dashboard) apiFailedDeliveries(c *gin.Context) {
	q, p := parseDeliveryQuery(c)
	if p != nil {
		server.WriteProblem(c, p)
		return
	}
	list, err := a.failedDeliveries(c.Request.Context(), q)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", list)
}

func (a *Dashboard) apiDelivery(c *gin.Context) {
	d, err := a.adminDelivery(c.Request.Context(), c.Param("tenant"), c.Param("id"))
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	server.WriteJSON(c, http.StatusOK, "application/json", d)
}

func (a *Dashboard) apiRedeliver(c *gin.Context) {
	tenant, id := c.Param("tenant"), c.Param("id")
	d, err := a.redeliver(c.Request.Context(), tenant, id)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	c.Header("Location", "/admin/api/deliveries/"+tenant+"/"+id)
	server.WriteJSON(c, http.StatusAccepted, "application/json", d)
}
