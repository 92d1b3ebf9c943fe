package termsafe_test

import (
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/internal/termsafe"
)

// An object printed to a terminal: its terminal controls are escaped, and
// a UTF-8 sequence split between two chunks arrives whole, not as two
// escaped halves.
func TestTermWriterEscapesAcrossChunks(t *testing.T) {
	var b strings.Builder
	tw := termsafe.NewWriter(&b)
	for _, chunk := range [][]byte{[]byte("caf\xc3"), []byte("\xa9 \x1b]0;pwned\x07 \xe2\x80"), []byte("\xae end\n"), []byte("\xc3")} {
		if _, err := tw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	if strings.ContainsAny(got, "\x1b\x07\u202e") {
		t.Errorf("terminal controls written raw: %q", got)
	}
	if !strings.HasPrefix(got, "café ") || !strings.Contains(got, " end\n") {
		t.Errorf("got %q, want café and the text kept", got)
	}
	if strings.Contains(got, "caf\\") {
		t.Errorf("a rune split between chunks was escaped as bytes: %q", got)
	}
}
