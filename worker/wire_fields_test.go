package worker

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// scanResult leaves to encoding/json every line with a key that inbound
// knows besides type, id and output: inboundFields must name them all, or
// a field added to inbound is read by one path and not the other.
func TestInboundFieldsNameEveryField(t *testing.T) {
	typ := reflect.TypeFor[inbound]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if !slices.ContainsFunc(inboundFields, func(k []byte) bool { return bytes.Equal(k, []byte(tag)) }) {
			t.Errorf("inbound field %s (%q) is not in inboundFields", f.Name, tag)
		}
	}
}
