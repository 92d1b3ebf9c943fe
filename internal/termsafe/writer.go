package termsafe

import (
	"io"
	"unicode/utf8"
)

// Writer escapes what is written to it as Lines does and writes the
// result to the underlying writer, for a stream of anybody's bytes (an
// object printed to a terminal). The bytes of a UTF-8 sequence split
// between two writes are held back until the sequence is whole, so it
// arrives as its character rather than as two escaped halves; Flush
// writes what is still held. A Writer is not safe for concurrent use.
type Writer struct {
	w       io.Writer
	pending []byte
}

// NewWriter returns a Writer escaping into w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p, holding back a trailing incomplete UTF-8 sequence, and
// reports p as written whole unless the underlying writer fails.
func (t *Writer) Write(p []byte) (int, error) {
	b := append(t.pending, p...)
	cut := len(b)
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				cut = len(b) - i
			}
			break
		}
	}
	t.pending = append([]byte(nil), b[cut:]...)
	if _, err := io.WriteString(t.w, Lines(string(b[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes the bytes still held back, escaped: at the end of the
// stream an incomplete sequence is shown as its escaped bytes.
func (t *Writer) Flush() error {
	_, err := io.WriteString(t.w, Lines(string(t.pending)))
	t.pending = nil
	return err
}
