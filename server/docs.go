package server

import (
	"bytes"
	_ "embed"
	"fmt"
	"html"
	"html/template"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/goccy/go-yaml"

	"github.com/asyncgate/asyncgate"
)

// The browsable API docs at GET /docs: one HTML page rendered on the server,
// once, from the embedded openapi.yaml, with html/template and no script.
// No CDN, nothing fetched by the browser, and always the document the
// binary serves. It shows what an integrator reads: the introduction, each
// operation with its parameters, body and answers, and each schema; for
// anything it leaves out, /openapi.yaml is one click away.

//go:embed docs.html.tmpl
var docsTemplate string

var renderDocs = sync.OnceValues(func() ([]byte, error) { return RenderDocs(asyncgate.OpenAPI) })

func (s *Server) docs(c *gin.Context) {
	page, err := renderDocs()
	if err != nil {
		writeProblem(c, fmt.Errorf("render docs: %w", err))
		return
	}
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	c.Data(http.StatusOK, "text/html; charset=utf-8", page)
}

// RenderDocs renders an OpenAPI 3.0 document as the HTML page of /docs.
func RenderDocs(spec []byte) ([]byte, error) {
	var d apiDoc
	if err := yaml.Unmarshal(spec, &d); err != nil {
		return nil, fmt.Errorf("parse openapi: %w", err)
	}
	t, err := template.New("docs").Funcs(template.FuncMap{
		"md":       markdown,
		"schema":   d.schemaText,
		"param":    d.param,
		"resp":     d.response,
		"anchor":   anchor,
		"required": func(s *schema, field string) bool { return slices.Contains(s.Required, field) },
		"public":   func(o *operation) bool { return o.Security != nil && len(*o.Security) == 0 },
	}).Parse(docsTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d.view()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The parts of an OpenAPI document that the page shows.
type (
	apiDoc struct {
		Info struct {
			Title, Version, Description string
		}
		Tags       []struct{ Name, Description string }
		Paths      ordered[pathItem]
		Components struct {
			Schemas    ordered[*schema]
			Responses  map[string]response
			Parameters map[string]param
			Headers    map[string]header
		}
	}
	pathItem struct {
		Parameters                    []param
		Get, Put, Post, Patch, Delete *operation
	}
	operation struct {
		Tags        []string
		OperationID string `yaml:"operationId"`
		Summary     string
		Description string
		Parameters  []param
		RequestBody *struct {
			Description string
			Content     ordered[mediaType]
		} `yaml:"requestBody"`
		Responses ordered[response]
		Security  *[]map[string][]string
	}
	param struct {
		Ref         string `yaml:"$ref"`
		Name, In    string
		Description string
		Required    bool
		Schema      *schema
	}
	mediaType struct{ Schema *schema }
	response  struct {
		Ref         string `yaml:"$ref"`
		Description string
		Headers     ordered[header]
		Content     ordered[mediaType]
	}
	header struct {
		Ref         string `yaml:"$ref"`
		Description string
		Required    bool
		Schema      *schema
	}
	schema struct {
		Ref                  string `yaml:"$ref"`
		Type, Format         string
		Description, Pattern string
		Enum                 []any
		Required             []string
		Properties           ordered[*schema]
		Items                *schema
		AdditionalProperties any `yaml:"additionalProperties"`
		Minimum, Maximum     *float64
		MaxLength            *int      `yaml:"maxLength"`
		OneOf                []*schema `yaml:"oneOf"`
	}
)

// ordered is a YAML mapping that keeps the document's order.
type ordered[T any] []named[T]

type named[T any] struct {
	Name  string
	Value T
}

func (o *ordered[T]) UnmarshalYAML(b []byte) error {
	var ms yaml.MapSlice
	if err := yaml.UnmarshalWithOptions(b, &ms, yaml.UseOrderedMap()); err != nil {
		return err
	}
	for _, it := range ms {
		vb, err := yaml.Marshal(it.Value)
		if err != nil {
			return err
		}
		var v T
		target := any(&v)
		if rv := reflect.ValueOf(&v).Elem(); rv.Kind() == reflect.Pointer {
			rv.Set(reflect.New(rv.Type().Elem())) // the decoder leaves a nil **T alone
			target = rv.Interface()
		}
		if err := yaml.Unmarshal(vb, target); err != nil {
			return fmt.Errorf("%v: %w", it.Key, err)
		}
		*o = append(*o, named[T]{fmt.Sprint(it.Key), v})
	}
	return nil
}

// The page's view of the document.
type (
	docsView struct {
		Title, Version, Description string
		Groups                      []opGroup
		Schemas                     ordered[*schema]
	}
	opGroup struct {
		Name, Description string
		Ops               []opView
	}
	opView struct {
		Method, Path string
		Op           *operation
		Params       []param
	}
)

func (d *apiDoc) view() docsView {
	v := docsView{Title: d.Info.Title, Version: d.Info.Version, Description: d.Info.Description, Schemas: d.Components.Schemas}
	byTag := map[string]*opGroup{}
	var order []string
	for _, t := range d.Tags {
		byTag[t.Name] = &opGroup{Name: t.Name, Description: t.Description}
		order = append(order, t.Name)
	}
	for _, p := range d.Paths {
		for _, m := range []struct {
			name string
			op   *operation
		}{{"get", p.Value.Get}, {"post", p.Value.Post}, {"put", p.Value.Put}, {"patch", p.Value.Patch}, {"delete", p.Value.Delete}} {
			if m.op == nil {
				continue
			}
			tag := "Other"
			if len(m.op.Tags) > 0 {
				tag = m.op.Tags[0]
			}
			g := byTag[tag]
			if g == nil {
				g = &opGroup{Name: tag}
				byTag[tag] = g
				order = append(order, tag)
			}
			params := slices.Concat(p.Value.Parameters, m.op.Parameters)
			g.Ops = append(g.Ops, opView{Method: m.name, Path: p.Name, Op: m.op, Params: params})
		}
	}
	for _, t := range order {
		if len(byTag[t].Ops) > 0 {
			v.Groups = append(v.Groups, *byTag[t])
		}
	}
	return v
}

func refName(ref string) string { return ref[strings.LastIndex(ref, "/")+1:] }

// param resolves a parameter reference.
func (d *apiDoc) param(p param) param {
	if p.Ref != "" {
		return d.Components.Parameters[refName(p.Ref)]
	}
	return p
}

// responseView is a response with its references resolved.
type responseView struct {
	Description string
	Headers     []named[header]
	Content     ordered[mediaType]
}

func (d *apiDoc) response(r response) responseView {
	if r.Ref != "" {
		r = d.Components.Responses[refName(r.Ref)]
	}
	v := responseView{Description: r.Description, Content: r.Content}
	for _, h := range r.Headers {
		if h.Value.Ref != "" {
			h.Value = d.Components.Headers[refName(h.Value.Ref)]
		}
		v.Headers = append(v.Headers, h)
	}
	return v
}

// schemaText is a schema in one line: its type, linked when it is a
// component, and its constraints.
func (d *apiDoc) schemaText(s *schema) template.HTML {
	if s == nil {
		return ""
	}
	if s.Ref != "" {
		n := html.EscapeString(refName(s.Ref))
		return template.HTML(`<a href="#schema-` + n + `">` + n + `</a>`)
	}
	var b strings.Builder
	switch {
	case s.Type == "array" && s.Items != nil:
		b.WriteString("array of " + string(d.schemaText(s.Items)))
	case s.Type == "object" && len(s.Properties) == 0:
		if as, ok := s.AdditionalProperties.(map[string]any); ok {
			b.WriteString("map of " + html.EscapeString(fmt.Sprint(as["type"])))
		} else {
			b.WriteString("object")
		}
	case len(s.OneOf) > 0:
		var alts []string
		for _, o := range s.OneOf {
			alts = append(alts, string(d.schemaText(o)))
		}
		b.WriteString("one of " + strings.Join(alts, ", "))
	default:
		b.WriteString(html.EscapeString(s.Type))
	}
	if s.Format != "" {
		b.WriteString(" <small>(" + html.EscapeString(s.Format) + ")</small>")
	}
	var notes []string
	if len(s.Enum) > 0 {
		var vals []string
		for _, e := range s.Enum {
			vals = append(vals, "<code>"+html.EscapeString(fmt.Sprint(e))+"</code>")
		}
		notes = append(notes, "one of "+strings.Join(vals, ", "))
	}
	if s.Pattern != "" {
		notes = append(notes, "pattern <code>"+html.EscapeString(s.Pattern)+"</code>")
	}
	if s.Minimum != nil {
		notes = append(notes, fmt.Sprintf("min %g", *s.Minimum))
	}
	if s.Maximum != nil {
		notes = append(notes, fmt.Sprintf("max %g", *s.Maximum))
	}
	if s.MaxLength != nil {
		notes = append(notes, fmt.Sprintf("at most %d characters", *s.MaxLength))
	}
	if len(notes) > 0 {
		b.WriteString(" <small>— " + strings.Join(notes, "; ") + "</small>")
	}
	return template.HTML(b.String())
}

// anchor makes an id for a link target from parts.
func anchor(parts ...string) string {
	return strings.Trim(notAlnum.ReplaceAllString(strings.Join(parts, "-"), "-"), "-")
}

// markdown renders the little Markdown that descriptions use: paragraphs,
// headings, lists, tables, `code`, **bold** and [links](url). The text is
// escaped first; only http(s), relative and #anchor links are kept.
func markdown(src string) template.HTML {
	var out strings.Builder
	var para []string
	flush := func() {
		if len(para) > 0 {
			out.WriteString("<p>" + inline(strings.Join(para, " ")) + "</p>\n")
			para = nil
		}
	}
	lines := strings.Split(strings.TrimSpace(src), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "":
			flush()
		case strings.HasPrefix(l, "#"):
			flush()
			out.WriteString("<h4>" + inline(strings.TrimLeft(l, "# ")) + "</h4>\n")
		case strings.HasPrefix(l, "|"):
			flush()
			out.WriteString("<table>\n")
			for ; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
				cells := strings.Split(strings.Trim(strings.TrimSpace(lines[i]), "|"), "|")
				if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
					continue // the separator row
				}
				out.WriteString("<tr>")
				for _, c := range cells {
					out.WriteString("<td>" + inline(strings.TrimSpace(c)) + "</td>")
				}
				out.WriteString("</tr>\n")
			}
			i--
			out.WriteString("</table>\n")
		case listItem.MatchString(l):
			flush()
			out.WriteString("<ul>\n")
			for ; i < len(lines) && listItem.MatchString(strings.TrimSpace(lines[i])); i++ {
				item := listItem.ReplaceAllString(strings.TrimSpace(lines[i]), "")
				// Continuation lines are indented.
				for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "  ") && !listItem.MatchString(strings.TrimSpace(lines[i+1])) && strings.TrimSpace(lines[i+1]) != "" {
					i++
					item += " " + strings.TrimSpace(lines[i])
				}
				out.WriteString("<li>" + inline(item) + "</li>\n")
			}
			i--
			out.WriteString("</ul>\n")
		default:
			para = append(para, l)
		}
	}
	flush()
	return template.HTML(out.String())
}

var (
	notAlnum   = regexp.MustCompile(`[^a-zA-Z0-9]+`)
	listItem   = regexp.MustCompile(`^(- |\d+\. )`)
	codeSpan   = regexp.MustCompile("`([^`]+)`")
	boldSpan   = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	linkSpan   = regexp.MustCompile(`\[([^\]]+)\]\(([^)\s]+)\)`)
	safeTarget = regexp.MustCompile(`^(https?://|/|#)`)
)

func inline(s string) string {
	s = html.EscapeString(s)
	s = codeSpan.ReplaceAllString(s, "<code>$1</code>")
	s = boldSpan.ReplaceAllString(s, "<strong>$1</strong>")
	return linkSpan.ReplaceAllStringFunc(s, func(m string) string {
		p := linkSpan.FindStringSubmatch(m)
		if !safeTarget.MatchString(html.UnescapeString(p[2])) {
			return p[1]
		}
		return `<a href="` + p[2] + `">` + p[1] + `</a>`
	})
}
