package worker

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCheckInput(t *testing.T) {
	cases := []struct {
		name, in string
		pointer  string // of the violation; "-" for none
	}{
		{"plain", `{"text":"hello","n":[1,2.5e10,-3]}`, "-"},
		{"at the depth", `{"a":[[1]]}`, "-"},
		{"one past the depth", `{"a":[[[1]]]}`, "/a/0/0"},
		{"depth in the second element", `{"a":[1,{"b":[[]]}]}`, "/a/1/b"},
		{"brackets in strings do not count", `{"a":"[[[[[[","b":"\"[[[["}`, "-"},
		{"long number", `{"a":{"b":[1,123456789]}}`, "/a/b/1"},
		{"number at the bound", `{"a":12345678}`, "-"},
		{"digits in strings do not count", `{"a":"123456789012"}`, "-"},
		{"escaped key", `{"a/b~c":1234567890}`, "/a~1b~0c"},
		{"number at the root", `1234567890`, ""},
		{"letters of literals do not add up", `[true,false,null,true,false,null,true,false]`, "-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := checkInput([]byte(tc.in), 3, 8)
			if tc.pointer == "-" {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				return
			}
			if e == nil || e.Code != 400 || len(e.Violations) != 1 || e.Violations[0].Pointer != tc.pointer {
				t.Fatalf("got %v, want a 400 at %q", e, tc.pointer)
			}
		})
	}
}

// BenchmarkCheckInput is what the input bounds cost each request to a
// worker, next to json.Valid on the same input in the same run: the
// cheapest pass any validation makes (the runner's schema check does more).
func BenchmarkCheckInput(b *testing.B) {
	words := make([]string, 200)
	for i := range words {
		words[i] = fmt.Sprintf("word%d", i)
	}
	small, _ := json.Marshal(map[string]any{"text": "Le renard brun saute par-dessus le chien paresseux"})
	big, _ := json.Marshal(map[string]any{"text": strings.Join(words, " "), "pixels": make([]float64, 4096), "tags": words})
	for _, in := range []struct {
		name string
		body []byte
	}{{"small", small}, {"large", big}} {
		b.Run(in.name+"/check", func(b *testing.B) {
			b.SetBytes(int64(len(in.body)))
			for b.Loop() {
				if checkInput(in.body, 512, 1000) != nil {
					b.Fatal("refused")
				}
			}
		})
		b.Run(in.name+"/json.Valid", func(b *testing.B) {
			b.SetBytes(int64(len(in.body)))
			for b.Loop() {
				if !json.Valid(in.body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
