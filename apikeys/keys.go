package apikeys

import "encoding/hex"

// Redis keys of the API key store, all built here:
//
//	ag:apikey:HASH   hash   one key, by the hex SHA-256 of its secret: id, tenant,
//	                        name, admin, prefix, created_at, last_used_at
//	ag:apikeys       hash   key id → HASH: the list of keys, and revoke by id
//
// None carries a hash tag: lookups start from the secret alone, and each
// operation touches one key at a time (or pipelines independent commands).
type keys struct{ prefix string }

func (k keys) record(hash [32]byte) string { return k.prefix + "apikey:" + hex.EncodeToString(hash[:]) }
func (k keys) index() string               { return k.prefix + "apikeys" }
