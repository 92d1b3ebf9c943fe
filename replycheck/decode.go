package replycheck

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/pnpworker/pnpworker/schemas"
)

// decodeJSON parses a job body into the generic form the schema validator
// takes: exactly what schemas.DecodeJSON returns (objects, arrays, strings,
// json.Number, bools, nil), but with a small parser over a document that
// json.Valid has accepted instead of a json.Decoder, whose buffers cost more
// than the validation itself at tens of thousands of jobs per second.
// Malformed input goes to schemas.DecodeJSON, so its errors read the same.
func decodeJSON(data []byte) (any, error) {
	if !json.Valid(data) || !utf8.Valid(data) {
		return schemas.DecodeJSON(data)
	}
	p := parser{data: data}
	return p.value(), nil
}

// parser reads a document known to be valid JSON.
type parser struct {
	data []byte
	i    int
}

func (p *parser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() any {
	p.space()
	switch p.data[p.i] {
	case '{':
		p.i++
		m := map[string]any{}
		p.space()
		if p.data[p.i] == '}' {
			p.i++
			return m
		}
		for {
			p.space()
			k := p.string()
			p.space()
			p.i++ // ':'
			m[k] = p.value()
			p.space()
			c := p.data[p.i]
			p.i++ // ',' or '}'
			if c == '}' {
				return m
			}
		}
	case '[':
		p.i++
		a := []any{}
		p.space()
		if p.data[p.i] == ']' {
			p.i++
			return a
		}
		for {
			a = append(a, p.value())
			p.space()
			c := p.data[p.i]
			p.i++ // ',' or ']'
			if c == ']' {
				return a
			}
		}
	case '"':
		return p.string()
	case 't':
		p.i += len("true")
		return true
	case 'f':
		p.i += len("false")
		return false
	case 'n':
		p.i += len("null")
		return nil
	default:
		start := p.i
		for p.i < len(p.data) && isNumberByte(p.data[p.i]) {
			p.i++
		}
		return json.Number(p.data[start:p.i])
	}
}

func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// string reads a string starting at its opening quote. Strings with escapes
// or invalid UTF-8 (which encoding/json replaces with U+FFFD) are decoded by
// encoding/json.
func (p *parser) string() string {
	open := p.i
	p.i++
	simple := true
	for {
		c := p.data[p.i]
		if c == '"' {
			break
		}
		if c == '\\' {
			simple = false
			p.i++ // skip the escaped byte, which may be a quote
		}
		p.i++
	}
	p.i++ // closing quote
	raw := p.data[open+1 : p.i-1]
	if simple && utf8.Valid(raw) {
		return string(raw)
	}
	var s string
	_ = json.Unmarshal(p.data[open:p.i], &s) // valid: json.Valid accepted the document
	return s
}
