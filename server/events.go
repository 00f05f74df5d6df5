package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// EventFeed is the tenant's event feed (webhooks.Store).
type EventFeed interface {
	// Feed returns the events after the cursor, oldest first.
	Feed(ctx context.Context, tenant, after string, limit int) (*webhooks.FeedPage, error)
	// WaitFeed is Feed, waiting until ctx ends when nothing is newer.
	WaitFeed(ctx context.Context, tenant, after string, limit int) (*webhooks.FeedPage, error)
}

// EventFeedPage is a page of the tenant's event feed.
type EventFeedPage struct {
	Data []json.RawMessage `json:"data"`
	Next string            `json:"next"`
}

func (s *Server) listEvents(c *gin.Context) {
	var fe []orders.FieldError
	after := c.Query("after")
	if !webhooks.ValidCursor(after) {
		fe = append(fe, orders.FieldError{Field: "after", Reason: "is not a cursor this API returned"})
	}
	limit := parseLimit(c, 100, 100, &fe)
	var wait time.Duration
	if w := c.Query("wait"); w != "" {
		d, err := parseWait(w)
		if err != nil {
			fe = append(fe, orders.FieldError{Field: "wait", Reason: "must be a duration like 30s (at most " + s.cfg.MaxWait.String() + ")"})
		}
		wait = min(d, s.cfg.MaxWait)
	}
	if p := fieldProblem(fe); p != nil {
		writeProblem(c, p)
		return
	}
	tenant := c.GetString(ctxTenant)
	ctx := c.Request.Context()
	var page *webhooks.FeedPage
	var err error
	if wait > 0 {
		outlast(c, wait)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		page, err = s.deps.Events.WaitFeed(wctx, tenant, after, limit)
	} else {
		page, err = s.deps.Events.Feed(ctx, tenant, after, limit)
	}
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", EventFeedPage{Data: page.Events, Next: page.Next})
}
