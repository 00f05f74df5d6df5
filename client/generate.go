package client

// The generator is pinned by the tool directive in go.mod, so `go generate`
// runs offline once the module cache holds it.
//go:generate go tool oapi-codegen -config oapi-codegen.yaml ../openapi.yaml
