package client

import (
	"context"
	"iter"
	"net/http"
	"time"
)

// The webhook endpoint methods. Like the order ones, they retry transient
// failures (POSTs with an Idempotency-Key of their own, the same on every
// retry) and return any other answer as a *Problem.

// CreateWebhookEndpoint registers an endpoint. The answer holds its signing
// secret (whsec_…), shown this once: store it.
func (c *Client) CreateWebhookEndpoint(ctx context.Context, req WebhookEndpointRequest) (*WebhookEndpointWithSecret, error) {
	key := newIdempotencyKey()
	params := &CreateWebhookEndpointParams{IdempotencyKey: &key}
	var ep WebhookEndpointWithSecret
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.CreateWebhookEndpoint(ctx, params, req)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// WebhookEndpoints returns the tenant's endpoints, without their secrets.
func (c *Client) WebhookEndpoints(ctx context.Context) ([]WebhookEndpoint, error) {
	var l WebhookEndpointList
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.ListWebhookEndpoints(ctx, nil)
	}, &l)
	if err != nil {
		return nil, err
	}
	return l.Data, nil
}

// GetWebhookEndpoint returns the endpoint with this id.
func (c *Client) GetWebhookEndpoint(ctx context.Context, id WebhookEndpointId) (*WebhookEndpoint, error) {
	var ep WebhookEndpoint
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.GetWebhookEndpoint(ctx, id, nil)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// DeleteWebhookEndpoint deletes the endpoint: it receives no more events.
func (c *Client) DeleteWebhookEndpoint(ctx context.Context, id WebhookEndpointId) error {
	return c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.DeleteWebhookEndpoint(ctx, id, nil)
	}, nil)
}

// RotateWebhookSecret gives the endpoint a new secret, returned this once.
// The previous secrets keep signing alongside it until
// PreviousSecretExpiresAt, so receivers can switch without losing events.
func (c *Client) RotateWebhookSecret(ctx context.Context, id WebhookEndpointId) (*WebhookEndpointWithSecret, error) {
	key := newIdempotencyKey()
	params := &RotateWebhookSecretParams{IdempotencyKey: &key}
	var ep WebhookEndpointWithSecret
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.RotateWebhookSecret(ctx, id, params)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// DisableWebhookEndpoint stops deliveries to the endpoint; its events are
// held until EnableWebhookEndpoint.
func (c *Client) DisableWebhookEndpoint(ctx context.Context, id WebhookEndpointId) (*WebhookEndpoint, error) {
	key := newIdempotencyKey()
	params := &DisableWebhookEndpointParams{IdempotencyKey: &key}
	var ep WebhookEndpoint
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.DisableWebhookEndpoint(ctx, id, params)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// EnableWebhookEndpoint resumes deliveries to a disabled endpoint.
func (c *Client) EnableWebhookEndpoint(ctx context.Context, id WebhookEndpointId) (*WebhookEndpoint, error) {
	key := newIdempotencyKey()
	params := &EnableWebhookEndpointParams{IdempotencyKey: &key}
	var ep WebhookEndpoint
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.EnableWebhookEndpoint(ctx, id, params)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// DeliveryFilter narrows WebhookDeliveries. Its zero value lists them all.
type DeliveryFilter struct {
	// Status, if set, keeps only the deliveries in it (such as failed).
	Status WebhookDeliveryStatus
	// PageSize is the number of deliveries per request; the server's default if 0.
	PageSize int
}

// WebhookDeliveries iterates over the endpoint's deliveries, newest first,
// fetching page after page. An error is yielded once, with a zero
// WebhookDelivery, and ends the iteration.
func (c *Client) WebhookDeliveries(ctx context.Context, endpoint WebhookEndpointId, filter DeliveryFilter) iter.Seq2[WebhookDelivery, error] {
	return func(yield func(WebhookDelivery, error) bool) {
		params := ListWebhookDeliveriesParams{}
		if filter.Status != "" {
			params.Status = &filter.Status
		}
		if filter.PageSize > 0 {
			params.Limit = &filter.PageSize
		}
		for {
			var page WebhookDeliveryList
			p := params
			err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
				return c.raw.ClientInterface.ListWebhookDeliveries(ctx, endpoint, &p)
			}, &page)
			if err != nil {
				yield(WebhookDelivery{}, err)
				return
			}
			for _, d := range page.Data {
				if !yield(d, nil) {
					return
				}
			}
			if page.NextCursor == nil || *page.NextCursor == "" || len(page.Data) == 0 {
				return
			}
			cursor := *page.NextCursor
			params.Cursor = &cursor
		}
	}
}

// GetWebhookDelivery returns the delivery with this id and its attempts.
func (c *Client) GetWebhookDelivery(ctx context.Context, id WebhookDeliveryId) (*WebhookDelivery, error) {
	var d WebhookDelivery
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.GetWebhookDelivery(ctx, id, nil)
	}, &d)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// RedeliverWebhook sends the delivery again now, also one that exhausted
// its retries and sits in the dead-letter queue.
func (c *Client) RedeliverWebhook(ctx context.Context, id WebhookDeliveryId) (*WebhookDelivery, error) {
	key := newIdempotencyKey()
	params := &RetryWebhookDeliveryParams{IdempotencyKey: &key}
	var d WebhookDelivery
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.RetryWebhookDelivery(ctx, id, params)
	}, &d)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// UpdateWebhookEndpoint changes the fields of the endpoint that patch sets
// (url, events, description, max_per_second) and returns it. Repeated, a
// PATCH sets the same values again, so transient failures are retried.
func (c *Client) UpdateWebhookEndpoint(ctx context.Context, id WebhookEndpointId, patch WebhookEndpointPatch) (*WebhookEndpoint, error) {
	var ep WebhookEndpoint
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.UpdateWebhookEndpoint(ctx, id, nil, patch)
	}, &ep)
	if err != nil {
		return nil, err
	}
	return &ep, nil
}

// EventTypes returns the catalog of event types, each with the JSON Schema
// of its body.
func (c *Client) EventTypes(ctx context.Context) ([]EventTypeInfo, error) {
	var l EventTypeList
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.ListEventTypes(ctx, nil)
	}, &l)
	if err != nil {
		return nil, err
	}
	return l.Data, nil
}

// TestWebhookEndpoint sends a signed webhook.test event to the endpoint now
// and returns the attempt: status, duration, response headers and body
// start, and the likely cause when the receiver refused it.
func (c *Client) TestWebhookEndpoint(ctx context.Context, id WebhookEndpointId) (*WebhookTestResult, error) {
	key := newIdempotencyKey()
	params := &TestWebhookEndpointParams{IdempotencyKey: &key}
	var res WebhookTestResult
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.TestWebhookEndpoint(ctx, id, params)
	}, &res)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// RecoverWebhookEndpoint starts redelivering the endpoint's failed
// deliveries made since since, oldest first, and returns the recovery;
// follow it with GetWebhookRecovery.
func (c *Client) RecoverWebhookEndpoint(ctx context.Context, id WebhookEndpointId, since time.Time) (*WebhookRecovery, error) {
	key := newIdempotencyKey()
	params := &RecoverWebhookEndpointParams{IdempotencyKey: &key}
	var rec WebhookRecovery
	err := c.call(ctx, true, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.RecoverWebhookEndpoint(ctx, id, params, WebhookRecoverRequest{Since: since})
	}, &rec)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// GetWebhookRecovery returns the recovery and its progress.
func (c *Client) GetWebhookRecovery(ctx context.Context, id WebhookRecoveryId) (*WebhookRecovery, error) {
	var rec WebhookRecovery
	err := c.call(ctx, false, func(ctx context.Context) (*http.Response, error) {
		return c.raw.ClientInterface.GetWebhookRecovery(ctx, id, nil)
	}, &rec)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}
