// Package asyncgate holds what belongs to the whole module rather than to
// one of its packages: the OpenAPI document of the public API.
package asyncgate

import _ "embed"

// OpenAPI is openapi.yaml, the OpenAPI 3.0 document of the public HTTP API:
// the single source of truth that the server, the generated client and the
// tests follow. The server serves it at GET /openapi.yaml; internal/apitest
// validates every response of the tests against it.
//
//go:embed openapi.yaml
var OpenAPI []byte
