package worker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// The request line is the line json.Marshal writes, as JSON: same fields,
// same values, one line.
func TestAppendRequestMatchesMarshal(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  request
	}{
		{"plain", request{Type: TypeRequest, ID: "1a", Algorithm: "py_word_count", Input: json.RawMessage(`{"text":"the quick brown fox"}`), TimeoutMS: 29998}},
		{"job id to escape", request{Type: TypeRequest, ID: "2", Algorithm: "a", Input: json.RawMessage(`{}`), JobID: "order \"17\"\n<é>\\\x01"}},
		{"input over several lines", request{Type: TypeRequest, ID: "3", Algorithm: "a", Input: json.RawMessage("{\n  \"text\": \"a\\nb\",\r\n  \"n\": [1,\n 2]\n}")}},
		{"html in the input", request{Type: TypeRequest, ID: "4", Algorithm: "a", Input: json.RawMessage(`{"html":"<b>&</b>","sep":"` + "\u2028" + `"}`)}},
		{"batch", request{Type: TypeBatch, ID: "5", Algorithm: "digits", Inputs: []json.RawMessage{json.RawMessage(`{"p":[1,2]}`), json.RawMessage("{\n\"p\":[3]}"), json.RawMessage(`7`)}, TimeoutMS: 4999}},
		{"no deadline, no job", request{Type: TypeRequest, ID: "6", Algorithm: "a", Input: json.RawMessage(`[]`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			got := appendRequest([]byte("kept"), r.Type, r.ID, r.Algorithm, r.Input, r.Inputs, r.TimeoutMS, r.JobID)
			if !bytes.HasPrefix(got, []byte("kept")) || !bytes.HasSuffix(got, []byte("}\n")) {
				t.Fatalf("line %q: want it appended, ending in a newline", got)
			}
			line := got[len("kept"):]
			if n := bytes.Count(line, []byte("\n")); n != 1 {
				t.Fatalf("line %q holds %d newlines, want 1", line, n)
			}
			want, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			if err := json.Unmarshal(line, &a); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("line %s\nmeans %v\nwant %v (%s)", line, a, b, want)
			}
		})
	}
}

// scanResult takes a line only when encoding/json reads it the same way;
// everything else is left to the general path.
func TestScanResult(t *testing.T) {
	for _, tc := range []struct {
		line   string
		taken  bool
		id     string
		output string
	}{
		{`{"type":"result","id":"1a","output":{"words":14}}`, true, "1a", `{"words":14}`},
		{` { "id" : "7" , "output" : [1, {"a":"}"}] , "type" : "result" } `, true, "7", `[1, {"a":"}"}]`},
		{`{"type":"result","id":"1","output":"a \"quoted\" \\ string"}`, true, "1", `"a \"quoted\" \\ string"`},
		{`{"type":"result","id":"1","output":null}`, true, "1", `null`},
		{`{"type":"result","id":"1","output":-1.5e3,"extra":{"x":[1,2]}}`, true, "1", `-1.5e3`},
		{`{"type":"result","id":"1","output":1,"output":2}`, true, "1", `2`}, // the last one, as encoding/json
		{`{"type":"result","id":"1","output":true}`, true, "1", `true`},
		// General path: not a plain result, or not valid JSON.
		{`{"type":"result","id":"1"}`, false, "", ""},
		{`{"type":"error","id":"1","code":422,"message":"x"}`, false, "", ""},
		{`{"type":"result","id":"1","results":[{"output":1}]}`, false, "", ""},
		{`{"type":"result","id":"1","output":{"a":1}} trailing`, false, "", ""},
		{`{"type":"result","id":"1","output":{"a":1}`, false, "", ""},
		{`{"Type":"result","id":"1","output":1}`, false, "", ""},      // matched by case by encoding/json
		{`{"type":"result","ID":"1","output":1}`, false, "", ""},      // likewise
		{`{"type":"result","id":"1","Output":1}`, false, "", ""},      // likewise
		{`{"type":"result","id":1,"output":1}`, false, "", ""},        // a type error for encoding/json
		{`{"type":"result","id":"\u0031","output":1}`, false, "", ""}, // an escape
		{`{"type":"result","id":"1","output":1,"code":"x"}`, false, "", ""},
		{`[1]`, false, "", ""},
		{`{}`, false, "", ""},
		{`"result"`, false, "", ""},
	} {
		var m inbound
		taken := scanResult([]byte(tc.line), &m)
		if taken != tc.taken {
			t.Errorf("%s: taken %v, want %v", tc.line, taken, tc.taken)
			continue
		}
		if !taken {
			if !reflect.DeepEqual(m, inbound{}) {
				t.Errorf("%s: not taken, yet m = %+v", tc.line, m)
			}
			continue
		}
		if m.Type != TypeResult || m.ID != tc.id || string(m.Output) != tc.output {
			t.Errorf("%s: got type %q id %q output %s, want id %q output %s", tc.line, m.Type, m.ID, m.Output, tc.id, tc.output)
		}
		var std inbound
		if err := json.Unmarshal([]byte(tc.line), &std); err != nil || std.Type != m.Type || std.ID != m.ID || string(std.Output) != string(m.Output) {
			t.Errorf("%s: encoding/json reads %+v (%v), scanResult %+v", tc.line, std, err, m)
		}
	}
}

// Whatever the line, a line scanResult takes is one encoding/json reads
// the same way: same type, id and output bytes.
func FuzzScanResult(f *testing.F) {
	for _, seed := range []string{
		`{"type":"result","id":"1a","output":{"words":14}}`,
		`{"type":"result","id":"1","output":[1,"]",{"a":"\"}"}],"x":null}`,
		`{"type":"result","id":"1","output":1,"output":2}`,
		`{"type":"error","id":"1","code":422}`,
		`{"TYPE":"result","id":"1","output":1}`,
		` {"type" :"result", "id": "2", "output" : "s" } `,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var m inbound
		if !scanResult(line, &m) {
			return
		}
		var std inbound
		if err := json.Unmarshal(line, &std); err != nil {
			t.Fatalf("%q taken, but encoding/json: %v", line, err)
		}
		if std.Type != m.Type || std.ID != m.ID || !bytes.Equal(std.Output, m.Output) || len(std.Results) != 0 {
			t.Fatalf("%q: encoding/json reads type %q id %q output %s, scanResult type %q id %q output %s", line, std.Type, std.ID, std.Output, m.Type, m.ID, m.Output)
		}
	})
}

// Whatever the input bytes, valid JSON, the request line is one line
// that encoding/json reads as the request.
func FuzzAppendRequest(f *testing.F) {
	for _, seed := range []string{`{"a":1}`, "{\n\"a\" :\r\n [1, 2]}", `"x"`, `[{"s":"\n"}]`} {
		f.Add([]byte(seed), "job-1")
	}
	f.Fuzz(func(t *testing.T, input []byte, job string) {
		if !json.Valid(input) {
			return // the runner validates every input first
		}
		line := appendRequest(nil, TypeRequest, "9z", "a", input, nil, 5, job)
		if bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("%q: a line break inside the line", line)
		}
		var got request
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		var a, b any
		_ = json.Unmarshal(input, &a)
		_ = json.Unmarshal(got.Input, &b)
		wantJob, _ := json.Marshal(job)
		var job2 string
		_ = json.Unmarshal(wantJob, &job2)
		if !reflect.DeepEqual(a, b) || got.JobID != job2 || got.ID != "9z" || got.TimeoutMS != 5 {
			t.Fatalf("%q: read back as %+v", line, got)
		}
	})
}

func BenchmarkRequestLine(b *testing.B) {
	req := request{Type: TypeRequest, ID: "1a", Algorithm: "py_word_count", Input: json.RawMessage(`{"text":"the quick brown fox jumps over the lazy dog while a plug and play runner"}`), TimeoutMS: 29998, JobID: "order-17"}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			line, _ := json.Marshal(req)
			_ = append(line, '\n')
		}
	})
	b.Run("appendRequest", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendRequest(buf[:0], req.Type, req.ID, req.Algorithm, req.Input, req.Inputs, req.TimeoutMS, req.JobID)
		}
	})
}

func BenchmarkReadResult(b *testing.B) {
	line := []byte(`{"type":"result","id":"1a","output":{"words":14}}`)
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m inbound
			_ = json.Unmarshal(line, &m)
		}
	})
	b.Run("scanResult", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m inbound
			scanResult(line, &m)
		}
	})
}
