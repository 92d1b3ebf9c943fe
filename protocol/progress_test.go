package protocol

import (
	"math"
	"strings"
	"testing"
)

func TestDecodeProgress(t *testing.T) {
	for _, tc := range []struct {
		name, body, err string
	}{
		{"valid", `{"job_id":"a.b-1","fraction":0.5,"message":"half way","instance":"i-1"}`, ""},
		{"bounds", `{"job_id":"a","fraction":1}`, ""},
		{"not json", `{`, "progress body"},
		{"bad job id", `{"job_id":"a..b","fraction":0.5}`, "job_id"},
		{"above one", `{"job_id":"a","fraction":1.5}`, "fraction"},
		{"negative", `{"job_id":"a","fraction":-0.1}`, "fraction"},
		{"escape sequence", `{"job_id":"a","fraction":0.1,"message":"\u001b[2J"}`, "control character"},
		{"line break", `{"job_id":"a","fraction":0.1,"message":"a\nb"}`, "control character"},
		{"bidi override", `{"job_id":"a","fraction":0.1,"message":"a\u202eb"}`, "control character"},
		{"too long", `{"job_id":"a","fraction":0.1,"message":"` + strings.Repeat("x", MaxProgressMessage+1) + `"}`, "at most"},
		{"bad instance", `{"job_id":"a","fraction":0.1,"instance":"a b"}`, "instance"},
		{"huge body", `{"job_id":"a","fraction":0.1,"x":"` + strings.Repeat("x", 4000) + `"}`, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeProgress([]byte(tc.body))
			if tc.err == "" && err != nil {
				t.Fatalf("DecodeProgress: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("DecodeProgress error %v, want one containing %q", err, tc.err)
			}
		})
	}
	if err := CheckProgressFraction(math.NaN()); err == nil {
		t.Fatal("NaN accepted")
	}
}

func TestProgressSubject(t *testing.T) {
	if got := ProgressSubject("ocr"); got != "progress.ocr" {
		t.Fatalf("ProgressSubject = %q", got)
	}
	if alg, ok := ProgressAlgorithm("progress.ocr"); !ok || alg != "ocr" {
		t.Fatalf("ProgressAlgorithm = %q, %v", alg, ok)
	}
	for _, s := range []string{"progress.", "progress.a.b", "cancel.ocr", "progress.Ocr"} {
		if _, ok := ProgressAlgorithm(s); ok {
			t.Fatalf("ProgressAlgorithm(%q) accepted", s)
		}
	}
}
