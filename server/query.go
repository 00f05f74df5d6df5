package server

import (
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/orders"
)

// The query parameters of the list routes, tenant and admin alike: each
// parser appends what is wrong to fe, and fieldProblem turns the lot into
// one validation problem.

// fieldProblem is a validation problem naming the fields; nil for none.
func fieldProblem(fe []orders.FieldError) *Problem {
	if len(fe) == 0 {
		return nil
	}
	p := newProblem("validation_failed", "the query has invalid parameters")
	p.Errors = fe
	return p
}

func parseLimit(c *gin.Context, def, maxLimit int, fe *[]orders.FieldError) int {
	l := c.Query("limit")
	if l == "" {
		return def
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > maxLimit {
		*fe = append(*fe, orders.FieldError{Field: "limit", Reason: "must be an integer from 1 to " + strconv.Itoa(maxLimit)})
		return def
	}
	return n
}

// parseCursor reads ?cursor=, which must pass valid (ids this API returned).
func parseCursor(c *gin.Context, valid func(string) bool, fe *[]orders.FieldError) string {
	cur := c.Query("cursor")
	if cur != "" && !valid(cur) {
		*fe = append(*fe, orders.FieldError{Field: "cursor", Reason: "is not a cursor this API returned"})
	}
	return cur
}

// parseOrderStatus reads ?status= as an order status.
func parseOrderStatus(c *gin.Context, fe *[]orders.FieldError) orders.Status {
	st := orders.Status(c.Query("status"))
	if st != "" && !st.Valid() {
		*fe = append(*fe, orders.FieldError{Field: "status", Reason: "must be one of pending, validated, funds_reserved, executed, rejected, failed, cancelled"})
	}
	return st
}
