// Package termsafe makes text that came from the network safe to print on a
// terminal. A registration's description, a dead letter's reason or an
// error message written by a runner can carry escape sequences (ESC, OSC,
// CSI in its 8-bit form) that move the cursor, rewrite the window title or
// the clipboard, or bidirectional overrides that make text read in another
// order than it is stored. Everything pnp prints for people goes through
// this package; JSON output is escaped too (see JSON).
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// unsafeRune reports whether a terminal would act on r rather than show it:
// C0 controls, DEL, C1 controls, the Unicode line and paragraph separators
// and the bidirectional embeddings, overrides, isolates and marks.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r == 0x2028, r == 0x2029:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// String returns s with every character a terminal would interpret (see
// above; tab and newline included, so a value cannot break a table row or
// fake a line) replaced by a visible Go-style escape: "\x1b", "\u202e".
// Bytes that are not UTF-8 become "\xff". Printable text, non-ASCII letters
// included, is returned unchanged, and without allocating when nothing
// needs escaping.
func String(s string) string { return escape(s, false) }

// Lines is String but keeps newlines, for multi-line messages such as
// joined errors.
func Lines(s string) string { return escape(s, true) }

func escape(s string, keepNewline bool) string {
	clean := true
	for i, r := range s {
		if (r == utf8.RuneError && !validAt(s, i)) || (unsafeRune(r) && !(keepNewline && r == '\n')) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepNewline && r == '\n':
			b.WriteByte('\n')
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// validAt reports whether the utf8.RuneError found at s[i] is a real U+FFFD
// rather than an invalid byte.
func validAt(s string, i int) bool {
	_, n := utf8.DecodeRuneInString(s[i:])
	return n == 3
}

// JSON escapes, in the output of encoding/json, the characters the encoder
// leaves raw although a terminal acts on them: DEL, C1 controls and the
// bidirectional controls become \u escapes. The result is valid JSON that
// decodes to the same values (encoding/json already escapes C0 controls and
// U+2028/U+2029, and such characters can only occur inside strings).
func JSON(b []byte) []byte {
	first := -1
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf && b[i] != 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r >= 0x20 && unsafeRune(r) {
			first = i
			break
		}
		i += n
	}
	if first < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:first]...)
	for i := first; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r >= 0x20 && unsafeRune(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	return out
}
