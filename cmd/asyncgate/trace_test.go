package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestTracingConfigErrors: bad tracing settings stop the process at start,
// naming the setting. (They fail before anything global is installed.)
func TestTracingConfigErrors(t *testing.T) {
	t.Parallel()
	api := []string{"asyncgate", "api", "--redis", "redis://127.0.0.1:1", "--api-keys", "k-0123456789abcdef=acme"}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad trace-stdout env", api, map[string]string{"ASYNCGATE_TRACE_STDOUT": "maybe"}, "ASYNCGATE_TRACE_STDOUT"},
		{"bad trace-stdout flag", append(api[:len(api):len(api)], "--trace-stdout=maybe"), nil, "trace-stdout"},
		{"unsupported otlp protocol", api, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"unsupported exporter", []string{"asyncgate", "dev", "--log-level", "error"}, map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}
