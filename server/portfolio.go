package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/orders"
)

// PortfolioReader reads an account's funds on behalf of a tenant.
type PortfolioReader interface {
	// ReadPortfolio returns the tenant's account's funds from the portfolio service, or,
	// when the service cannot answer now, the last view the tenant read, marked Stale. With
	// neither, it returns an *UnavailableError; for an account the tenant does not have,
	// an error matching ErrAccountNotFound.
	ReadPortfolio(ctx context.Context, tenant, accountID string) (Portfolio, error)
}

// ErrAccountNotFound is the portfolio service's answer for an account the tenant does not
// have. Accounts belong to tenants: another tenant's account of the same id is not found.
var ErrAccountNotFound = errors.New("no such account")

// Portfolio is an account's funds as the API shows them.
type Portfolio struct {
	AccountID string    `json:"account_id"`
	Cash      float64   `json:"cash"`
	Reserved  float64   `json:"reserved"`
	Available float64   `json:"available"`
	AsOf      time.Time `json:"as_of"`
	// Stale is true when the portfolio service could not answer and this is the last view
	// known; AsOf says how old it is.
	Stale bool `json:"stale"`
}

// UnavailableError is a downstream service that cannot answer now, with nothing to fall
// back on. It becomes a 503 problem with Retry-After.
type UnavailableError struct {
	// Service names the downstream, such as "portfolio".
	Service string
	// RetryAfter is when to ask again; zero for the default of one second.
	RetryAfter time.Duration
	// Err is the cause, logged, never shown.
	Err error
}

// Error implements error.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s unavailable: %v", e.Service, e.Err)
}

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// getPortfolio is GET /v1/portfolios/:account_id: a synchronous read through the
// portfolio breaker, falling back to the last known view.
func (s *Server) getPortfolio(c *gin.Context) {
	account := c.Param("account_id")
	if !orders.ValidAccountID(account) {
		const reason = "must be 1-64 characters of letters, digits, '_', '.', ':' or '-'"
		p := newProblem("validation_failed", "account_id "+reason)
		p.Errors = []orders.FieldError{{Field: "account_id", Reason: reason}}
		writeProblem(c, p)
		return
	}
	if s.deps.Portfolio == nil {
		writeProblem(c, &UnavailableError{Service: "portfolio", Err: fmt.Errorf("no portfolio service configured")})
		return
	}
	pf, err := s.deps.Portfolio.ReadPortfolio(c.Request.Context(), c.GetString(ctxTenant), account)
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", pf)
}
