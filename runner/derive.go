package runner

import (
	"encoding"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
)

// SchemaFor returns the JSON Schema (draft 2020-12) of the JSON form of T,
// the schema NewAlgorithm and NewBatchAlgorithm derive for an input or
// output type when the Spec gives none. It follows encoding/json:
//
//   - a struct is an object with a property per exported field, named by
//     its json tag; embedded structs lend their fields; fields tagged
//     json:"-" are left out. Members the type does not name are refused
//     (additionalProperties false), so a misspelt field is a 400 naming
//     it rather than a value silently ignored.
//   - a field is required unless it is a pointer or tagged omitempty or
//     omitzero (a jsonschema:"required" tag makes any field required).
//   - a pointer, slice or map field that is not omitempty may be null,
//     since encoding/json writes a nil one as null; a []byte is a base64
//     string.
//   - time.Time is a date-time string, url.URL a uri, net.IP an ipv4,
//     json.Number a number, json.RawMessage anything; other types with a
//     MarshalText method are strings. Sized and
//     unsigned integers get their range as minimum and maximum.
//   - maps with string keys are objects whose members all have the
//     element's schema; slices and arrays are arrays (an array of fixed
//     length says so with minItems and maxItems).
//
// Struct tags add what a Go type cannot say (github.com/invopop/jsonschema
// tags): jsonschema:"minLength=1,maxLength=100,pattern=^[a-z]+$,format=uri",
// jsonschema:"minimum=0,maximum=1,default=0.5", jsonschema:"enum=png,enum=jpeg",
// jsonschema:"minItems=1", and a description, which may hold commas, in
// jsonschema_description:"...". A type with a JSONSchema() *jsonschema.Schema
// method supplies its own schema.
//
// Types whose JSON form reflection cannot see are refused with an error
// naming the field: recursive types, channels, functions, complex numbers,
// and types with their own MarshalJSON or UnmarshalJSON (but no
// JSONSchema method). Their algorithms give the schema in the Spec.
func SchemaFor[T any]() ([]byte, error) {
	return schemaOf(reflect.TypeFor[T](), "")
}

// schemaOf derives t's schema, titled title when that is not empty.
func schemaOf(t reflect.Type, title string) ([]byte, error) {
	if err := derivable(t, t.String(), nil); err != nil {
		return nil, err
	}
	r := jsonschema.Reflector{
		Anonymous:      true, // no $id made up from the Go package path
		DoNotReference: true, // one self-contained tree, no $defs to follow
		Mapper:         textSchema,
	}
	s := r.ReflectFromType(t)
	refine(t, s)
	if title != "" && s.Title == "" {
		s.Title = title
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", t, err)
	}
	return b, nil
}

var (
	timeType      = reflect.TypeFor[time.Time]()
	urlType       = reflect.TypeFor[url.URL]()
	ipType        = reflect.TypeFor[net.IP]()
	rawType       = reflect.TypeFor[json.RawMessage]()
	numberType    = reflect.TypeFor[json.Number]()
	schemaType    = reflect.TypeFor[interface{ JSONSchema() *jsonschema.Schema }]()
	textType      = reflect.TypeFor[encoding.TextMarshaler]()
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshal = reflect.TypeFor[json.Unmarshaler]()
)

// special reports whether t's schema is the reflector's own (time, URL,
// IP, raw JSON) or t's JSONSchema method's.
func special(t reflect.Type) bool {
	switch t {
	case timeType, urlType, ipType, rawType, numberType:
		return true
	}
	return t.Implements(schemaType)
}

// known reports whether the schema of t is not reflected from its
// structure: special types and text types.
func known(t reflect.Type) bool {
	return special(t) || implements(t, textType)
}

func implements(t, iface reflect.Type) bool {
	return t.Implements(iface) || reflect.PointerTo(t).Implements(iface)
}

// textSchema is the reflector's Mapper: a type that marshals itself as
// text is a string, whatever its structure, and json.Number, a string
// type, is written as a number.
func textSchema(t reflect.Type) *jsonschema.Schema {
	switch {
	case t == numberType:
		return &jsonschema.Schema{Type: "number"}
	case special(t) || !implements(t, textType):
		return nil
	}
	return &jsonschema.Schema{Type: "string"}
}

// derivable checks that the reflector can describe t (it panics on some
// kinds and recurses forever on recursive types); at names the value.
func derivable(t reflect.Type, at string, stack []reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if special(t) {
		return nil
	}
	if implements(t, jsonMarshaler) || implements(t, jsonUnmarshal) {
		return fmt.Errorf("%s: type %s has its own JSON encoding (MarshalJSON or UnmarshalJSON), which reflection cannot see: give the schema in the Spec, or a JSONSchema method", at, t)
	}
	if implements(t, textType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if slices.Contains(stack, t) {
			return fmt.Errorf("%s: type %s contains itself; derived schemas are trees: give the schema in the Spec", at, t)
		}
		stack = append(stack, t)
		for f := range t.Fields() {
			name, _, role := jsonField(f)
			if role == absent {
				continue
			}
			if role == promoted {
				name = f.Name
			}
			if err := derivable(f.Type, at+"."+name, stack); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		return derivable(t.Elem(), at+"[]", stack)
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, implements(k, textType):
		case k.Kind() >= reflect.Int && k.Kind() <= reflect.Int64:
		default:
			return fmt.Errorf("%s: map key type %s has no JSON form the reflector knows", at, k)
		}
		return derivable(t.Elem(), at+"[key]", stack)
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer, reflect.Uintptr:
		return fmt.Errorf("%s: type %s has no JSON form", at, t)
	}
	return nil
}

// fieldRole is what a struct field is in the JSON form of its struct.
type fieldRole int

const (
	member   fieldRole = iota // a member named by jsonField
	promoted                  // an embedded struct whose fields are members
	absent                    // unexported or tagged "-"
)

// jsonField returns the JSON name of a struct field as encoding/json and
// the reflector see it, its json tag options, and its role.
func jsonField(f reflect.StructField) (name string, opts []string, role fieldRole) {
	tag := strings.Split(f.Tag.Get("json"), ",")
	name, opts = tag[0], tag[1:]
	if name == "-" && len(opts) == 0 || strings.Split(f.Tag.Get("jsonschema"), ",")[0] == "-" {
		return "", nil, absent
	}
	if f.Anonymous && name == "" && derefType(f.Type).Kind() == reflect.Struct {
		return "", opts, promoted
	}
	if !f.Anonymous && !f.IsExported() {
		return "", nil, absent
	}
	if name == "" {
		name = f.Name
	}
	return name, opts, member
}

// refine adjusts the reflected schema s of t to encoding/json's rules where
// the reflector's differ: pointers are optional, nil pointers, slices and
// maps may be null, integers keep to their Go range.
func refine(t reflect.Type, s *jsonschema.Schema) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s == nil || s == jsonschema.TrueSchema || s == jsonschema.FalseSchema || known(t) {
		return
	}
	if len(s.OneOf) == 2 && s.OneOf[1].Type == "null" { // jsonschema:"nullable"
		s = s.OneOf[0]
	}
	switch t.Kind() {
	case reflect.Struct:
		refineStruct(t, s)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() != reflect.Uint8 || t.Kind() == reflect.Array {
			refineElem(t.Elem(), s.Items)
		}
	case reflect.Map:
		refineElem(t.Elem(), s.AdditionalProperties)
		for _, p := range s.PatternProperties {
			refineElem(t.Elem(), p)
		}
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		bound(s, -(int64(1) << (bits - 1)), strconv.FormatInt(int64(1)<<(bits-1)-1, 10))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		bound(s, 0, strconv.FormatUint(uint64(1)<<t.Bits()-1, 10))
	case reflect.Uint, reflect.Uint64:
		bound(s, 0, "")
	}
}

// refineElem refines the schema s of an item or map member of type t,
// which is null when t is a nil pointer, slice or map.
func refineElem(t reflect.Type, s *jsonschema.Schema) {
	refine(t, s)
	if nilable(t) && s != jsonschema.FalseSchema && s != jsonschema.TrueSchema {
		nullable(s)
	}
}

// nilable reports whether encoding/json writes a nil value of t as null.
func nilable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		return t != rawType
	}
	return false
}

// bound sets an integer's minimum and maximum unless its tags did.
func bound(s *jsonschema.Schema, min int64, max string) {
	if s.Type != "integer" {
		return
	}
	if s.Minimum == "" && s.ExclusiveMinimum == "" {
		s.Minimum = json.Number(strconv.FormatInt(min, 10))
	}
	if max != "" && s.Maximum == "" && s.ExclusiveMaximum == "" {
		s.Maximum = json.Number(max)
	}
}

func refineStruct(t reflect.Type, s *jsonschema.Schema) {
	if s.Properties == nil {
		return
	}
	for f := range t.Fields() {
		name, opts, role := jsonField(f)
		if role == promoted {
			refineStruct(derefType(f.Type), s)
		}
		if role != member {
			continue
		}
		prop, ok := s.Properties.Get(name)
		if !ok {
			continue
		}
		refine(f.Type, prop)
		omit := slices.Contains(opts, "omitempty") || slices.Contains(opts, "omitzero")
		if f.Type.Kind() == reflect.Pointer && !slices.Contains(strings.Split(f.Tag.Get("jsonschema"), ","), "required") {
			s.Required = slices.DeleteFunc(s.Required, func(r string) bool { return r == name })
		}
		if !omit && nilable(f.Type) {
			nullable(prop)
		}
	}
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// nullable lets s also accept null, by adding "null" to its type (and to
// its enum, when it has one).
func nullable(s *jsonschema.Schema) {
	if s.Type == "" || s.Type == "null" {
		return // untyped (accepts null already) or wrapped by jsonschema:"nullable"
	}
	if s.Extras == nil {
		s.Extras = map[string]any{}
	}
	s.Extras["type"] = []string{s.Type, "null"}
	s.Type = ""
	if len(s.Enum) > 0 {
		s.Enum = append(s.Enum, nil)
	}
}
