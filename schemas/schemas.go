// Package schemas holds every JSON Schema of the protocol and of the built-in
// algorithms as files, and compiles them with santhosh-tekuri/jsonschema.
//
// The files are the source of truth: docs and runners in other languages read
// them directly. Go code gets them through FS, Bytes and Compile.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// FS holds every *.json file of this folder.
//
//go:embed *.json
var FS embed.FS

// Bytes returns the content of the schema file name (e.g. "error.json").
// It panics when the file does not exist: names are compile-time constants.
func Bytes(name string) []byte {
	b, err := FS.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("schemas: %s is not embedded", name))
	}
	return b
}

// Compile compiles the embedded schema file name.
func Compile(name string) (*jsonschema.Schema, error) {
	b, err := FS.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	return CompileBytes(name, b)
}

// CompileBytes compiles a JSON Schema document given as bytes. name is used
// in error messages and as the resource location when the schema has no $id.
// Schemas without "$schema" are treated as draft 2020-12. Remote references
// are not loaded: a schema must be self-contained.
func CompileBytes(name string, schema []byte) (*jsonschema.Schema, error) {
	return compile(name, schema, nil)
}

// compile is CompileBytes with a hook to adjust the compiler.
func compile(name string, schema []byte, adjust func(*jsonschema.Compiler)) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	if adjust != nil {
		adjust(c)
	}
	c.Draft = jsonschema.Draft2020
	c.AssertFormat = true
	c.LoadURL = func(s string) (_ io.ReadCloser, err error) {
		return nil, fmt.Errorf("remote reference %q not allowed", s)
	}
	url := "mem:///" + strings.TrimPrefix(name, "/")
	if err := c.AddResource(url, bytes.NewReader(schema)); err != nil {
		return nil, fmt.Errorf("schemas: %s: %w", name, err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("schemas: %s: %w", name, err)
	}
	return s, nil
}

// DecodeJSON parses one JSON document into the generic form Schema.Validate
// expects (numbers as json.Number, so large integers keep their precision).
// Trailing data after the document is an error.
func DecodeJSON(data []byte) (any, error) {
	// encoding/json would quietly replace invalid UTF-8 inside strings with
	// U+FFFD; a request with broken text is the caller's to fix.
	if !utf8.Valid(data) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON document")
	}
	return v, nil
}

// Violation is one way an instance fails a schema: where (a JSON pointer into
// the instance, "" for the whole document) and what is wrong.
type Violation struct {
	Pointer string `json:"pointer"`
	Message string `json:"message"`
}

// String formats v as "pointer: message", with "/" for the whole document.
func (v Violation) String() string {
	p := v.Pointer
	if p == "" {
		p = "/"
	}
	return p + ": " + v.Message
}

// Violations flattens a validation error into its leaf causes, the ones
// that name a concrete problem, in a stable order. It returns nil when err
// is not a *jsonschema.ValidationError.
func Violations(err error) []Violation {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	var out []Violation
	seen := map[Violation]bool{}
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			v := Violation{Pointer: e.InstanceLocation, Message: e.Message}
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pointer != out[j].Pointer {
			return out[i].Pointer < out[j].Pointer
		}
		return out[i].Message < out[j].Message
	})
	return out
}
