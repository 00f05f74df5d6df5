// Package webhooks signs the webhooks that asyncgate delivers, and verifies
// them on the receiving side, following the Standard Webhooks specification
// (https://www.standardwebhooks.com), so that any Standard Webhooks library
// accepts what asyncgate sends.
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
