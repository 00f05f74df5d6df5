package downstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Portfolio is the client of the portfolio service: account views and fund reservations.
// It is safe for concurrent use.
type Portfolio struct {
	c *client
}

// View is an account's funds as the portfolio service sees them.
type View struct {
	AccountID string
	Cash      float64
	Reserved  float64
	Available float64
	AsOf      time.Time
}

// Reservation reserves Amount of an account's funds, once per ID.
type Reservation struct {
	// Tenant owns the account: the service keeps its books per tenant. Required.
	Tenant string
	// OrderID is the order the funds are reserved for. Required.
	OrderID   string
	ID        string
	AccountID string
	Amount    float64
}

// ReleaseRequest releases the funds of a reservation.
type ReleaseRequest struct {
	// Tenant and OrderID are those of the Reservation. Required.
	Tenant, OrderID string
	ReservationID   string
}

// NewPortfolio returns a client of the portfolio service, or an error for an invalid cfg.
func NewPortfolio(cfg Config) (*Portfolio, error) {
	c, err := newClient("portfolio", cfg)
	if err != nil {
		return nil, err
	}
	return &Portfolio{c: c}, nil
}

// BreakerState returns the state of the portfolio circuit breaker.
func (p *Portfolio) BreakerState() gobreaker.State {
	return p.c.breaker.State()
}

// Breaker returns the state of the portfolio circuit breaker, and until when it is open.
func (p *Portfolio) Breaker() BreakerStatus {
	return p.c.breaker.status()
}

// Stats returns the counts of the client's attempts.
func (p *Portfolio) Stats() Stats {
	return p.c.stats.snapshot()
}

// Get returns the funds of a tenant's account. An account id means something only within
// its tenant: another tenant's account of the same id is another account. It returns
// ErrUnknownAccount when the tenant has no such account.
func (p *Portfolio) Get(ctx context.Context, tenant, accountID string) (View, error) {
	if accountID == "" {
		return View{}, errors.New("get portfolio: empty account id")
	}
	var v View
	err := p.c.call(ctx, request{method: http.MethodGet, path: "/portfolios/" + url.PathEscape(accountID), tenant: tenant},
		func(resp *http.Response) error {
			if resp.StatusCode == http.StatusNotFound {
				return p.notFound(resp)
			}
			if resp.StatusCode != http.StatusOK {
				return p.c.statusError(resp)
			}
			data, err := readJSON(resp, p.c.cfg.MaxBodyBytes)
			if err != nil {
				return err
			}
			if v, err = decodeView(data); err != nil {
				return err
			}
			if v.AccountID != accountID {
				return fmt.Errorf("%w: view of account %.64q", ErrBadResponse, v.AccountID)
			}
			return nil
		})
	if err != nil {
		return View{}, fmt.Errorf("get portfolio %s: %w", accountID, err)
	}
	return v, nil
}

func decodeView(data []byte) (View, error) {
	var w struct {
		AccountID *string    `json:"account_id"`
		Cash      *float64   `json:"cash"`
		Reserved  *float64   `json:"reserved"`
		Available *float64   `json:"available"`
		AsOf      *time.Time `json:"as_of"`
	}
	if err := unmarshal(data, &w); err != nil {
		return View{}, err
	}
	switch {
	case w.AccountID == nil || *w.AccountID == "":
		return View{}, missing("account_id")
	case w.Cash == nil:
		return View{}, missing("cash")
	case w.Reserved == nil:
		return View{}, missing("reserved")
	case w.Available == nil:
		return View{}, missing("available")
	case w.AsOf == nil:
		return View{}, missing("as_of")
	}
	return View{AccountID: *w.AccountID, Cash: *w.Cash, Reserved: *w.Reserved, Available: *w.Available, AsOf: *w.AsOf}, nil
}

// Reserve reserves funds. It is idempotent on r.ID: repeating a reservation that
// succeeded succeeds without reserving twice. It returns ErrInsufficientFunds when the
// account cannot cover r.Amount, ErrUnknownAccount when the tenant has no such account;
// those answers are final for r.ID.
func (p *Portfolio) Reserve(ctx context.Context, r Reservation) error {
	switch {
	case r.ID == "":
		return errors.New("reserve funds: empty reservation id")
	case r.OrderID == "":
		return errors.New("reserve funds: empty order id")
	}
	body := struct {
		ReservationID string  `json:"reservation_id"`
		AccountID     string  `json:"account_id"`
		Amount        float64 `json:"amount"`
	}{r.ID, r.AccountID, r.Amount}
	err := p.c.call(ctx, request{method: http.MethodPost, path: "/reservations", key: r.ID, body: body, tenant: r.Tenant, order: r.OrderID},
		func(resp *http.Response) error {
			switch resp.StatusCode {
			case http.StatusOK, http.StatusCreated:
				return p.checkStatus(resp, r.ID, "reserved")
			case http.StatusConflict:
				return ErrInsufficientFunds
			case http.StatusNotFound:
				return p.notFound(resp)
			}
			return p.c.statusError(resp)
		})
	if err != nil {
		return fmt.Errorf("reserve %s: %w", r.ID, err)
	}
	return nil
}

// Release releases the funds of a reservation. It is idempotent, and releasing a
// reservation the service does not know is not an error: compensation may run before the
// reservation was made. Nor is releasing one that the fill of its order settled: those
// funds are spent, nothing is left to release.
func (p *Portfolio) Release(ctx context.Context, r ReleaseRequest) error {
	reservationID := r.ReservationID
	switch {
	case reservationID == "":
		return errors.New("release funds: empty reservation id")
	case r.OrderID == "":
		return errors.New("release funds: empty order id")
	}
	err := p.c.call(ctx, request{
		method: http.MethodPost,
		path:   "/reservations/" + url.PathEscape(reservationID) + "/release",
		key:    reservationID,
		tenant: r.Tenant,
		order:  r.OrderID,
	}, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return p.c.statusError(resp)
		}
		return p.checkStatus(resp, reservationID, "released", "unknown", "settled")
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", reservationID, err)
	}
	return nil
}

// notFound reads a 404: ErrUnknownAccount when the service says the account is not the
// tenant's, else a status error (a 404 of anything else, such as a wrong base URL, is a
// bug on our side, not an answer about the account).
func (p *Portfolio) notFound(resp *http.Response) error {
	data, err := readJSON(resp, p.c.cfg.MaxBodyBytes)
	if err != nil {
		return p.c.statusError(resp)
	}
	var w struct {
		Error string `json:"error"`
	}
	if unmarshal(data, &w) != nil || w.Error != "unknown_account" {
		return p.c.statusError(resp)
	}
	return ErrUnknownAccount
}

// checkStatus reads a reservation answer and checks that it is about id and has one of
// the statuses.
func (p *Portfolio) checkStatus(resp *http.Response, id string, statuses ...string) error {
	data, err := readJSON(resp, p.c.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var w struct {
		ReservationID *string `json:"reservation_id"`
		Status        *string `json:"status"`
	}
	if err := unmarshal(data, &w); err != nil {
		return err
	}
	switch {
	case w.ReservationID == nil:
		return missing("reservation_id")
	case *w.ReservationID != id:
		return fmt.Errorf("%w: answer for reservation %.64q", ErrBadResponse, *w.ReservationID)
	case w.Status == nil:
		return missing("status")
	}
	for _, s := range statuses {
		if *w.Status == s {
			return nil
		}
	}
	return fmt.Errorf("%w: reservation status %.64q", ErrBadResponse, *w.Status)
}
