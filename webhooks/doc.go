// Package webhooks tells integrators that their orders ended: it keeps
// their endpoints, turns an order's end into an event, delivers it signed
// as the Standard Webhooks specification says (https://www.standardwebhooks.com),
// so that any Standard Webhooks library accepts it, logs every attempt, and
// refuses to send anywhere it must not. It also verifies webhooks on the
// receiving side. It knows nothing of queues: package jobs runs its
// deliveries on Asynq.
//
// # Endpoints and events
//
// A [Store] keeps each tenant's endpoints (URL, subscribed event types, a
// [Secret] and, during a rotation, the previous one), and the events and
// deliveries made for them, in Redis under the tenant's hash tag. [Store.Publish]
// stores one [Event] (its id from [EventID]: the same order change always
// makes the same id) and one delivery per subscribed endpoint, plus one for
// the order's callback_url, in one script; publishing the same event again
// creates nothing and returns what is still pending, so a retried fan-out
// schedules what a crashed one missed, and nothing twice.
//
// # Delivery
//
// A [Deliverer] makes one attempt of one delivery: it checks that the
// delivery is due and its endpoint enabled and not waiting, POSTs the
// stored body with fresh signature headers, reads at most 4 KiB of the
// answer, and records the attempt. Only a 2xx is a success; redirects are
// not followed. Its [Result] says what comes next: a retry after the next
// wait of the schedule ([DefaultSchedule], ±20 %) or after the receiver's
// Retry-After (429, 503); a postponement, which spends no attempt, while the
// endpoint's breaker is open; the end, when the budget is spent (the
// delivery is failed; its task goes to the dead-letter queue).
//
// Each endpoint has a breaker, kept in Redis so that every worker shares
// it: a run of failures opens it for a cooldown that doubles with each
// further failure; then one attempt probes the endpoint while the others
// wait. A 410 Gone, or failures lasting DelivererConfig.DisableAfter,
// disable the endpoint with a reason; its deliveries are then held, not
// lost, and go again when the endpoint is enabled.
//
// # Destinations
//
// An endpoint's URL scheme picks how its events travel; everything above
// stays the same. The Deliverer signs each attempt and hands it, as a
// [Message], to the [Sender] of the scheme: https (a POST; a 2xx is a
// success), amqp and amqps (a persistent, mandatory publish to a RabbitMQ
// exchange on a channel in confirm mode; the broker's ack is a success, and
// a nack, a returned message, a missing exchange, a refused login or no
// confirm in time is a failure), nats and tls (a JetStream publish with
// Nats-Msg-Id = webhook-id; the stream's ack is a success). The message
// carries the body and the signature headers as a webhook does, with
// lower-case names. Broker connections are pooled per URL and closed when
// idle. Credentials in a URL are masked ([MaskURL]) wherever an endpoint or
// delivery is read.
//
// # Where webhooks may go
//
// A [Guard] refuses URLs that are not https (unless allowed) and hosts
// that are, or resolve to, loopback, private, link-local, carrier-grade
// NAT, cloud metadata and other special addresses, unless its
// configuration allows them: at registration ([Guard.CheckURL]) and again at
// every connect ([Guard.DialContext], whose dialer checks the very address
// it connects to), so that a name whose DNS answer changes after
// registration (DNS rebinding) is refused too.
//
// # Signing
//
// Every delivery carries three headers:
//
//	webhook-id:        the message ID, the same across retries of one event
//	webhook-timestamp: when this attempt was signed, in Unix seconds
//	webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">
//
// [Headers] builds all three; [Sign] returns the signature header alone. Each
// attempt is signed afresh with the current time, so that receivers can
// reject stale and replayed messages. The signed content is the body exactly
// as sent: sign the bytes you write to the request, not a value you encode
// again.
//
// While an endpoint's secret rotates, sign with the new and the old secret.
// The signature header then lists one "v1," signature per secret, separated
// by spaces, and a receiver holding either secret accepts the message.
//
// An endpoint with the v1a scheme signs with an ed25519 key pair instead
// ([NewSigningKey], a Secret whose text form starts "whsk_" and is never
// shown): its entries are "v1a,<base64 ed25519 signature of the same
// text>", and receivers check them with the public half ([Secret.PublicKey],
// "whpk_…") and [VerifyPublicKey]. Both kinds may sign one message side by
// side, one entry each.
//
// # Verifying
//
// Receivers written in Go call [Verify] with their secret, the request
// headers and the raw body. It checks that the three headers are present,
// that the timestamp is within a tolerance of the receiver's clock (five
// minutes by default, [DefaultTolerance]), and that any of the "v1,"
// signatures matches, comparing in constant time. Signatures of other
// versions are ignored, so that senders can add schemes without breaking
// receivers. [VerifyAt] takes the current time as an argument, for tests.
// Failures wrap one of the sentinel errors [ErrMissingHeaders],
// [ErrInvalidHeader], [ErrTimestampTooOld], [ErrTimestampTooNew] and
// [ErrInvalidSignature]; a receiver should answer all of them with a 4xx and
// never act on the body.
//
// The webhook-id lets a receiver drop a message it has already handled: the
// signature proves who sent it, not that it is new.
//
// # Secrets
//
// A [Secret] is the key an endpoint shares with asyncgate. [NewSecret] makes
// one of 32 random bytes; its text form, from [Secret.String], is "whsec_"
// followed by the key in standard base64, and [ParseSecret] reads it back (as
// well as the bare base64 text, as the Standard Webhooks libraries do).
//
// The key is shown to its owner once, when the endpoint is created or its
// secret rotated. Everywhere else a Secret keeps it hidden: fmt's verbs and
// log/slog print REDACTED, and String is the only way to the key. Secret has
// no JSON marshaling; store the text form deliberately.
package webhooks
