package webhooks

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The event types an endpoint can subscribe to: one per terminal status of
// an order.
const (
	EventOrderExecuted  = "order.executed"
	EventOrderRejected  = "order.rejected"
	EventOrderFailed    = "order.failed"
	EventOrderCancelled = "order.cancelled"
)

// EventTypes lists every event type, the default subscription.
var EventTypes = []string{EventOrderExecuted, EventOrderRejected, EventOrderFailed, EventOrderCancelled}

// Errors of the store. Test for them with errors.Is.
var (
	// ErrEndpointNotFound: no such endpoint for this tenant.
	ErrEndpointNotFound = errors.New("webhook endpoint not found")
	// ErrDeliveryNotFound: no such delivery for this tenant (or it expired).
	ErrDeliveryNotFound = errors.New("webhook delivery not found")
	// ErrEndpointBusy: the endpoint has DelivererConfig.EndpointConcurrency
	// attempts in flight already; the delivery waits for a slot.
	ErrEndpointBusy = errors.New("the webhook endpoint has its maximum of deliveries in flight")
	// ErrEndpointDisabled: the endpoint is disabled; enable it first.
	ErrEndpointDisabled = errors.New("webhook endpoint is disabled")
	// ErrTooManyEndpoints: the tenant has StoreConfig.MaxEndpoints already.
	ErrTooManyEndpoints = errors.New("too many webhook endpoints")
	// ErrEventTooLarge: the event's body exceeds StoreConfig.MaxEventBytes.
	ErrEventTooLarge = errors.New("webhook event too large")
)

// Limits on an endpoint.
const (
	MaxDescription = 256
	// MaxPerSecondLimit bounds an endpoint's max_per_second.
	MaxPerSecondLimit = 10000
)

// EndpointInput is what a tenant asks for when it registers an endpoint.
type EndpointInput struct {
	// URL receives the events: https, or http where allowed.
	URL string `json:"url"`
	// Events are the event types to receive; empty means all of EventTypes.
	Events []string `json:"events,omitempty"`
	// Description is free text for the tenant, at most MaxDescription bytes.
	Description string `json:"description,omitempty"`
	// MaxPerSecond caps the attempts per second to the endpoint; 0: no cap.
	MaxPerSecond int `json:"max_per_second,omitempty"`
}

// EndpointPatch is a change of an endpoint: the fields given (not nil)
// replace the endpoint's.
type EndpointPatch struct {
	URL         *string   `json:"url,omitempty"`
	Events      *[]string `json:"events,omitempty"`
	Description *string   `json:"description,omitempty"`
	// MaxPerSecond 0 removes the cap.
	MaxPerSecond *int `json:"max_per_second,omitempty"`
}

// validate checks the given fields as EndpointInput.validate does, and
// normalizes Events.
func (p *EndpointPatch) validate() error {
	in := EndpointInput{URL: "x"}
	if p.URL != nil {
		in.URL = *p.URL
	}
	if p.Events != nil {
		if len(*p.Events) == 0 {
			return &ValidationError{Fields: []FieldError{{"events", "must list at least one event type"}}}
		}
		in.Events = *p.Events
	}
	if p.Description != nil {
		in.Description = *p.Description
	}
	if p.MaxPerSecond != nil {
		in.MaxPerSecond = *p.MaxPerSecond
	}
	if err := in.validate(); err != nil {
		return err
	}
	if p.Events != nil {
		p.Events = &in.Events
	}
	return nil
}

// FieldError names one offending field of an input.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError lists every offending field of an input.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Reason
	}
	return "invalid webhook endpoint: " + strings.Join(parts, "; ")
}

// validate checks the fields that need no DNS, and normalizes Events.
func (in *EndpointInput) validate() error {
	var v ValidationError
	if in.URL == "" {
		v.Fields = append(v.Fields, FieldError{"url", "is required"})
	}
	if len(in.Events) == 0 {
		in.Events = slices.Clone(EventTypes)
	}
	for _, e := range in.Events {
		if !slices.Contains(EventTypes, e) {
			v.Fields = append(v.Fields, FieldError{"events", fmt.Sprintf("%q is not an event type; use %s", e, strings.Join(EventTypes, ", "))})
			break
		}
	}
	slices.Sort(in.Events)
	in.Events = slices.Compact(in.Events)
	if len(in.Description) > MaxDescription || !utf8.ValidString(in.Description) {
		v.Fields = append(v.Fields, FieldError{"description", fmt.Sprintf("must be at most %d bytes of UTF-8", MaxDescription)})
	}
	if in.MaxPerSecond < 0 || in.MaxPerSecond > MaxPerSecondLimit {
		v.Fields = append(v.Fields, FieldError{"max_per_second", fmt.Sprintf("must be from 0 (no cap) to %d", MaxPerSecondLimit)})
	}
	if len(v.Fields) > 0 {
		return &v
	}
	return nil
}

// Endpoint is a registered webhook receiver. Its secrets never leave the
// store through it: CreateEndpoint and RotateSecret return the new secret
// once, apart.
type Endpoint struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Description string    `json:"description"`
	Events      []string  `json:"events"`
	Status      string    `json:"status"` // EndpointEnabled or EndpointDisabled
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// DisabledReason says why a disabled endpoint was disabled.
	DisabledReason string     `json:"disabled_reason,omitempty"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	// PreviousSecretExpiresAt is set while a rotated-out secret still signs
	// alongside the current one.
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
	// FailingSince is set while the endpoint's deliveries keep failing.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// MaxPerSecond caps the attempts per second to the endpoint; 0: no cap.
	MaxPerSecond int `json:"max_per_second,omitempty"`
}

// Endpoint statuses.
const (
	EndpointEnabled  = "enabled"
	EndpointDisabled = "disabled"
)

// Reasons an endpoint gets disabled by asyncgate rather than by its owner.
const (
	ReasonDisabledByUser = "disabled by the user"
	ReasonGone           = "the receiver answered 410 Gone"
)

var (
	endpointIDRe = regexp.MustCompile(`^ep_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	deliveryIDRe = regexp.MustCompile(`^dlv_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// ValidEndpointID reports whether id has the shape of an endpoint id
// ("ep_" and a UUID). Use it to answer "not found" without a lookup.
func ValidEndpointID(id string) bool { return endpointIDRe.MatchString(id) }

// ValidDeliveryID reports whether id has the shape of a delivery id
// ("dlv_" and a UUID).
func ValidDeliveryID(id string) bool { return deliveryIDRe.MatchString(id) }
