package downstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Execution is the client of the execution service. It is safe for concurrent use.
type Execution struct {
	c *client
}

// ExecutionRequest asks for an order to be executed, once per ID.
type ExecutionRequest struct {
	// Tenant owns the account: the service keeps its books per tenant. Required.
	Tenant string
	// OrderID is the order to execute. Required.
	OrderID   string
	ID        string
	AccountID string
	Symbol    string
	Side      string // "buy" or "sell"
	Quantity  float64
	// LimitPrice is the worst acceptable price; nil for a market order.
	LimitPrice *float64
}

// Fill is an executed order.
type Fill struct {
	ExecutionID string
	Symbol      string
	Side        string
	Quantity    float64
	Price       float64
	FilledAt    time.Time
}

// NewExecution returns a client of the execution service, or an error for an invalid cfg.
func NewExecution(cfg Config) (*Execution, error) {
	c, err := newClient("execution", cfg)
	if err != nil {
		return nil, err
	}
	return &Execution{c: c}, nil
}

// BreakerState returns the state of the execution circuit breaker.
func (e *Execution) BreakerState() gobreaker.State {
	return e.c.breaker.State()
}

// Breaker returns the state of the execution circuit breaker, and until when it is open.
func (e *Execution) Breaker() BreakerStatus {
	return e.c.breaker.status()
}

// Stats returns the counts of the client's attempts.
func (e *Execution) Stats() Stats {
	return e.c.stats.snapshot()
}

// Execute executes an order. It is idempotent on req.ID: repeating it returns the same fill
// without executing again. It returns an error matching ErrRefused, an *RefusedError, when
// the service refuses the order; that answer is final for req.ID.
func (e *Execution) Execute(ctx context.Context, req ExecutionRequest) (Fill, error) {
	switch {
	case req.ID == "":
		return Fill{}, errors.New("execute: empty execution id")
	case req.OrderID == "":
		return Fill{}, errors.New("execute: empty order id")
	}
	body := struct {
		ExecutionID string   `json:"execution_id"`
		AccountID   string   `json:"account_id"`
		Symbol      string   `json:"symbol"`
		Side        string   `json:"side"`
		Quantity    float64  `json:"quantity"`
		LimitPrice  *float64 `json:"limit_price"`
	}{req.ID, req.AccountID, req.Symbol, req.Side, req.Quantity, req.LimitPrice}

	var fill Fill
	err := e.c.call(ctx, request{method: http.MethodPost, path: "/executions", key: req.ID, body: body, tenant: req.Tenant, order: req.OrderID},
		func(resp *http.Response) error {
			switch resp.StatusCode {
			case http.StatusOK, http.StatusCreated:
				data, err := readJSON(resp, e.c.cfg.MaxBodyBytes)
				if err != nil {
					return err
				}
				if fill, err = decodeFill(data); err != nil {
					return err
				}
				if fill.ExecutionID != req.ID {
					return fmt.Errorf("%w: fill for execution %.64q", ErrBadResponse, fill.ExecutionID)
				}
				return nil
			case http.StatusUnprocessableEntity:
				return e.refusal(resp)
			}
			return e.c.statusError(resp)
		})
	if err != nil {
		return Fill{}, fmt.Errorf("execute %s: %w", req.ID, err)
	}
	return fill, nil
}

// refusal reads the reason of a 422. The refusal stands even when its body is unreadable.
func (e *Execution) refusal(resp *http.Response) error {
	var w struct {
		Reason string `json:"reason"`
	}
	if data, err := readJSON(resp, e.c.cfg.MaxBodyBytes); err == nil {
		_ = unmarshal(data, &w)
	}
	return &RefusedError{Reason: w.Reason}
}

// decodeFill decodes the answer of a successful execution. A fill without execution_id,
// status "filled", a positive quantity and a positive price is ErrBadResponse.
func decodeFill(data []byte) (Fill, error) {
	var w struct {
		ExecutionID *string    `json:"execution_id"`
		Status      *string    `json:"status"`
		Symbol      string     `json:"symbol"`
		Side        string     `json:"side"`
		Quantity    *float64   `json:"quantity"`
		Price       *float64   `json:"price"`
		FilledAt    *time.Time `json:"filled_at"`
	}
	if err := unmarshal(data, &w); err != nil {
		return Fill{}, err
	}
	switch {
	case w.ExecutionID == nil || *w.ExecutionID == "":
		return Fill{}, missing("execution_id")
	case w.Status == nil:
		return Fill{}, missing("status")
	case *w.Status != "filled":
		return Fill{}, fmt.Errorf("%w: execution status %.64q", ErrBadResponse, *w.Status)
	case w.Quantity == nil:
		return Fill{}, missing("quantity")
	case !(*w.Quantity > 0):
		return Fill{}, fmt.Errorf("%w: quantity %v", ErrBadResponse, *w.Quantity)
	case w.Price == nil:
		return Fill{}, missing("price")
	case !(*w.Price > 0):
		return Fill{}, fmt.Errorf("%w: price %v", ErrBadResponse, *w.Price)
	}
	f := Fill{
		ExecutionID: *w.ExecutionID,
		Symbol:      w.Symbol,
		Side:        w.Side,
		Quantity:    *w.Quantity,
		Price:       *w.Price,
	}
	if w.FilledAt != nil {
		f.FilledAt = *w.FilledAt
	}
	return f, nil
}
