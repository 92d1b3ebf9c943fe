package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// checkInput refuses, with a 400 naming the place, an input that nests
// deeper than maxDepth or holds a number longer than maxNumber characters:
// valid JSON that the process's own parser may not survive (Python's
// json stops near 1000 levels, and its int() at 4300 digits). The input
// is valid JSON already (it satisfied the input schema). One pass over the
// bytes decides; only an input that is refused is walked again to find
// the JSON pointer.
func checkInput(in []byte, maxDepth, maxNumber int) *protocol.Error {
	depth, number := 0, 0
	inString, escaped := false, false
	for _, c := range in {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString, number = true, 0
		case '{', '[':
			if depth++; depth > maxDepth {
				return locateInputProblem(in, maxDepth, maxNumber)
			}
			number = 0
		case '}', ']':
			depth, number = depth-1, 0
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '-', '+', '.', 'e', 'E':
			if number++; number > maxNumber {
				return locateInputProblem(in, maxDepth, maxNumber)
			}
		default:
			number = 0
		}
	}
	return nil
}

// locateInputProblem walks in token by token (the decoder keeps its own
// stack: no recursion) to the first value past the bounds.
func locateInputProblem(in []byte, maxDepth, maxNumber int) *protocol.Error {
	type frame struct {
		array   bool
		index   int
		key     string
		wantKey bool
	}
	var path []frame
	pointer := func() string {
		var b strings.Builder
		for _, f := range path {
			b.WriteByte('/')
			if f.array {
				b.WriteString(strconv.Itoa(f.index))
			} else {
				b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(f.key))
			}
		}
		return b.String()
	}
	refuse := func(msg string) *protocol.Error {
		return &protocol.Error{Code: protocol.CodeInvalidInput, Message: "input is beyond what this worker accepts",
			Violations: []schemas.Violation{{Pointer: pointer(), Message: msg}}}
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			// Not found (cannot happen for the valid JSON the scan
			// refused): refuse the whole input.
			path = nil
			return refuse(fmt.Sprintf("nests deeper than %d levels or holds a number longer than %d characters", maxDepth, maxNumber))
		}
		if n := len(path); n > 0 && !path[n-1].array && path[n-1].wantKey {
			if key, ok := tok.(string); ok {
				path[n-1].key, path[n-1].wantKey = key, false
				continue
			}
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			path = path[:len(path)-1]
			continue
		}
		// A value starts: it takes its place in its container.
		if n := len(path); n > 0 {
			if path[n-1].array {
				path[n-1].index++
			} else {
				path[n-1].wantKey = true
			}
		}
		switch v := tok.(type) {
		case json.Delim:
			if len(path)+1 > maxDepth {
				return refuse(fmt.Sprintf("nested deeper than %d levels", maxDepth))
			}
			path = append(path, frame{array: v == '[', index: -1, wantKey: v == '{'})
		case json.Number:
			if len(v) > maxNumber {
				return refuse(fmt.Sprintf("a number of %d characters; at most %d", len(v), maxNumber))
			}
		}
	}
}
