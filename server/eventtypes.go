package server

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/goccy/go-yaml"

	"github.com/asyncgate/asyncgate"
	"github.com/asyncgate/asyncgate/webhooks"
)

// EventType is one entry of the event type catalog.
type EventType struct {
	Type        string         `json:"type"`
	Description string         `json:"description"`
	Schema      map[string]any `json:"schema"`
}

// EventTypeList is the catalog, GET /v1/event-types.
type EventTypeList struct {
	Data []EventType `json:"data"`
}

// eventTypeDescriptions say when each event type is sent.
var eventTypeDescriptions = map[string]string{
	webhooks.EventOrderExecuted:  "The order was executed: data.status is executed and data.fill says how.",
	webhooks.EventOrderRejected:  "The order was refused (invalid, or not enough funds); nothing was reserved.",
	webhooks.EventOrderFailed:    "The order gave up or its execution was refused; every reservation was released.",
	webhooks.EventOrderCancelled: "The order was cancelled at your request before it executed.",
}

var (
	catalogOnce sync.Once
	catalog     EventTypeList
	catalogErr  error
)

// eventTypeCatalog builds the catalog once from the embedded openapi.yaml:
// the schema of each type is the document's WebhookEvent with its type
// fixed, as a JSON Schema (2020-12) whose $defs hold the schemas it uses.
func eventTypeCatalog() (EventTypeList, error) {
	catalogOnce.Do(func() {
		var doc struct {
			Components struct {
				Schemas map[string]any `yaml:"schemas"`
			} `yaml:"components"`
		}
		if catalogErr = yaml.Unmarshal(asyncgate.OpenAPI, &doc); catalogErr != nil {
			return
		}
		defs := map[string]any{}
		var collect func(name string) error
		collect = func(name string) error {
			if _, ok := defs[name]; ok {
				return nil
			}
			s, ok := doc.Components.Schemas[name]
			if !ok {
				return fmt.Errorf("openapi.yaml has no schema %s", name)
			}
			defs[name] = nil // being converted: a cycle ends here
			var refs []string
			defs[name] = toJSONSchema(s, &refs)
			for _, r := range refs {
				if err := collect(r); err != nil {
					return err
				}
			}
			return nil
		}
		if catalogErr = collect("WebhookEvent"); catalogErr != nil {
			return
		}
		for _, t := range webhooks.EventTypes {
			root := maps.Clone(defs["WebhookEvent"].(map[string]any))
			props := maps.Clone(root["properties"].(map[string]any))
			props["type"] = map[string]any{"type": "string", "const": t}
			root["properties"] = props
			root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
			root["title"] = t
			d := maps.Clone(defs)
			delete(d, "WebhookEvent")
			delete(d, "WebhookEventType")
			root["$defs"] = d
			catalog.Data = append(catalog.Data, EventType{Type: t, Description: eventTypeDescriptions[t], Schema: root})
		}
	})
	return catalog, catalogErr
}

// toJSONSchema converts an OpenAPI 3.0 schema to JSON Schema 2020-12:
// references point into $defs (their names appended to refs), nullable
// becomes a null type, a boolean exclusiveMinimum/Maximum a number, and
// examples go.
func toJSONSchema(v any, refs *[]string) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			switch k {
			case "example", "nullable":
				continue
			case "$ref":
				s, _ := val.(string)
				name, ok := strings.CutPrefix(s, "#/components/schemas/")
				if ok {
					*refs = append(*refs, name)
					out[k] = "#/$defs/" + name
					continue
				}
			}
			out[k] = toJSONSchema(val, refs)
		}
		if x["nullable"] == true {
			if t, ok := out["type"].(string); ok {
				out["type"] = []any{t, "null"}
			}
		}
		for _, b := range [][2]string{{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}} {
			if x[b[0]] == true {
				out[b[0]] = out[b[1]]
				delete(out, b[1])
			} else if x[b[0]] == false {
				delete(out, b[0])
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toJSONSchema(e, refs)
		}
		return out
	default:
		return v
	}
}

func (s *Server) listEventTypes(c *gin.Context) {
	list, err := eventTypeCatalog()
	if err != nil {
		writeProblem(c, err)
		return
	}
	writeJSON(c, http.StatusOK, "application/json", list)
}
