// Package apikeys issues, stores and looks up the API keys that integrators
// and operators send as "Authorization: Bearer <key>".
//
// # Keys
//
// A key is a random secret with a recognisable prefix, "ag_live_" followed by
// 43 base62 characters (256 random bits). [Store.Create] returns it once; the
// store keeps only its SHA-256, with the key's id, tenant, name, creation
// time and last use. Lost keys cannot be shown again: revoke and create
// another.
//
// Each key belongs to one tenant. Admin keys (Key.Admin) also reach the
// admin routes; tenant keys reach only the tenant's own /v1 API.
//
// # Storage
//
// Keys are looked up by the SHA-256 of the secret before the tenant is
// known, so they are not tagged by tenant: every key record is its own
// Redis key (see keys.go), and no operation needs two of them atomically.
// The server caches lookups in-process; see server.Config.KeyCacheTTL.
package apikeys
