package protocol

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// W3C Trace Context headers (https://www.w3.org/TR/trace-context/), carried
// as NATS headers under their lowercase HTTP names. A runner neither
// creates nor changes them: a request that carries a valid traceparent has
// its trace id on every log line about it, one without has none; the
// controller and the gateway pass them on from job and HTTP request to
// run.<algorithm>.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// TraceParent returns the request's traceparent header value when it is
// valid per W3C Trace Context, and "" otherwise. The name is matched case
// insensitively, since a caller coming from HTTP may have canonicalised it
// ("Traceparent").
func TraceParent(h nats.Header) string {
	v := headerFold(h, HeaderTraceParent)
	if _, ok := parseTraceParent(v); !ok {
		return ""
	}
	return v
}

// TraceID returns the 32 hex digit trace id of the request's traceparent
// header, or "" when it has none or an invalid one.
func TraceID(h nats.Header) string {
	id, _ := parseTraceParent(headerFold(h, HeaderTraceParent))
	return id
}

// headerFold is h.Get(name), falling back to a case-insensitive match.
func headerFold(h nats.Header, name string) string {
	if len(h) == 0 {
		return ""
	}
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
}

// parseTraceParent checks "version-traceid-parentid-flags": lowercase hex
// fields of 2, 32, 16 and 2 digits, version not ff, ids not all zero.
// Version 00 has exactly these fields; a later version may append more
// after a '-'.
func parseTraceParent(v string) (traceID string, ok bool) {
	const n = 55
	if len(v) < n || (len(v) > n && v[n] != '-') || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return "", false
	}
	version, id, parent, flags := v[0:2], v[3:35], v[36:52], v[53:55]
	if !lowerHex(version) || !lowerHex(id) || !lowerHex(parent) || !lowerHex(flags) {
		return "", false
	}
	if version == "ff" || (version == "00" && len(v) != n) || allZero(id) || allZero(parent) {
		return "", false
	}
	return id, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	return strings.Trim(s, "0") == ""
}
