package protocol

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestTraceParentParsing(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	cases := []struct {
		name, header, value, want string
	}{
		{"valid", "traceparent", "00-" + id + "-00f067aa0ba902b7-01", id},
		{"canonicalised name", "Traceparent", "00-" + id + "-00f067aa0ba902b7-01", id},
		{"future version with more fields", "traceparent", "01-" + id + "-00f067aa0ba902b7-01-extra", id},
		{"version 00 with more fields", "traceparent", "00-" + id + "-00f067aa0ba902b7-01-extra", ""},
		{"version ff", "traceparent", "ff-" + id + "-00f067aa0ba902b7-01", ""},
		{"zero trace id", "traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"zero parent id", "traceparent", "00-" + id + "-0000000000000000-01", ""},
		{"upper case hex", "traceparent", "00-" + strings.ToUpper(id) + "-00f067aa0ba902b7-01", ""},
		{"short", "traceparent", "00-" + id[:31] + "-00f067aa0ba902b7-01", ""},
		{"garbage", "traceparent", "hello", ""},
		{"none", "other", "x", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := nats.Header{c.header: []string{c.value}}
			if got := TraceID(h); got != c.want {
				t.Errorf("TraceID = %q, want %q", got, c.want)
			}
			if got := TraceParent(h); (got != "") != (c.want != "") {
				t.Errorf("TraceParent = %q", got)
			}
		})
	}
}
