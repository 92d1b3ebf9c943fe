package worker

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The hot path of the framing: a request line is appended to a reused
// buffer from the input's bytes, which the runner has validated already,
// and the common reply, a plain result, is read without decoding its
// output. Everything else takes the general path (encoding/json) with its
// checks.

// appendRequest appends the line of a request (one input) or a batch
// (inputs) to b, newline included. It writes what json.Marshal of a
// request writes, field for field, except that the inputs' bytes are
// copied as they are (they are valid JSON; only an input spread over
// several lines is compacted) and strings are not HTML-escaped.
func appendRequest(b []byte, typ, id, algorithm string, input []byte, inputs []json.RawMessage, timeoutMS int64, jobID string) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"id":`...)
	b = appendString(b, id)
	b = append(b, `,"algorithm":`...)
	b = appendString(b, algorithm)
	if len(input) > 0 {
		b = append(b, `,"input":`...)
		b = appendValue(b, input)
	}
	if len(inputs) > 0 {
		b = append(b, `,"inputs":[`...)
		for i, in := range inputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, in)
		}
		b = append(b, ']')
	}
	if timeoutMS != 0 {
		b = append(b, `,"timeout_ms":`...)
		b = strconv.AppendInt(b, timeoutMS, 10)
	}
	if jobID != "" {
		b = append(b, `,"job_id":`...)
		b = appendString(b, jobID)
	}
	return append(b, '}', '\n')
}

// appendValue appends v, a valid JSON document, on one line: a line break
// in valid JSON can only be whitespace between tokens, and is compacted
// away.
func appendValue(b, v []byte) []byte {
	if bytes.IndexByte(v, '\n') < 0 && bytes.IndexByte(v, '\r') < 0 {
		return append(b, v...)
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, v); err != nil {
		// Not valid JSON after all: the line breaks go, the worker's
		// parser says what is wrong.
		return append(b, strings.NewReplacer("\n", " ", "\r", " ").Replace(string(v))...)
	}
	return buf.Bytes()
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// inboundFields are the JSON names of inbound's fields. A key that matches
// one of them only without regard to case, as encoding/json matches
// names, sends a line to the general path.
var inboundFields = [][]byte{[]byte("type"), []byte("id"), []byte("protocol"), []byte("algorithms"), []byte("sdk"), []byte("output"), []byte("results"), []byte("code"), []byte("message"), []byte("detail"), []byte("level"), []byte("algorithm"), []byte("job_id"), []byte("fraction")}

// scanResult reads a plain result line, {"type":"result","id":"…",
// "output":…} with nothing else that inbound knows, into m: its output is
// the line's own bytes, not decoded and not copied. It reports false, m
// untouched, for any other line, which then takes the general path. The
// whole line is checked to be valid JSON first, as the general path would.
func scanResult(line []byte, m *inbound) bool {
	if !json.Valid(line) {
		return false
	}
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return false
	}
	var typ, id, output []byte
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return false
	}
	for {
		key, end, ok := plainString(line, i)
		if !ok {
			return false
		}
		i = skipSpace(line, end)
		i = skipSpace(line, i+1) // the colon
		vend := skipValue(line, i)
		switch {
		case string(key) == "type" || string(key) == "id":
			v, e, ok := plainString(line, i)
			if !ok || e != vend {
				return false
			}
			if string(key) == "type" {
				typ = v
			} else {
				id = v
			}
		case string(key) == "output":
			output = line[i:vend]
		default:
			for _, f := range inboundFields {
				if bytes.EqualFold(key, f) {
					return false
				}
			}
		}
		i = skipSpace(line, vend)
		if line[i] == '}' {
			break
		}
		i = skipSpace(line, i+1) // the comma
	}
	if string(typ) != TypeResult || len(output) == 0 {
		return false
	}
	m.Type, m.ID, m.Output = TypeResult, string(id), output
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the string at b[i] when it has no escapes, returning
// its bytes and the index after its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			return nil, 0, false
		case '"':
			return b[i+1 : j], j + 1, true
		}
	}
	return nil, 0, false
}

// skipValue returns the index just after the JSON value starting at b[i];
// b is valid JSON.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i // the end of the enclosing object
			}
		case ',':
			if depth == 0 {
				return i
			}
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}
