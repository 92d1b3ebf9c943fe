package protocol

import (
	"regexp"
	"strings"
	"testing"
)

func TestSubjects(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"request", RequestSubject("ocr"), "run.ocr"},
		{"pinned", PinnedSubject("ocr", "1.2.0"), "run.ocr.v1_2_0"},
		{"pinned pre-release and build", PinnedSubject("ocr", "2.0.0-rc.1+build.5"), "run.ocr.v2_0_0-rc_1__build_5"},
		{"job", JobSubject("ocr"), "jobs.ocr"},
		{"dead letter", DeadSubject("ocr"), "dead.ocr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid func(string) bool
		in    string
		want  bool
	}{
		{"algorithm", ValidAlgorithmName, "language_detection", true},
		{"algorithm starting with a digit", ValidAlgorithmName, "1abc", false},
		{"algorithm with a dot", ValidAlgorithmName, "a.b", false},
		{"algorithm of 65 characters", ValidAlgorithmName, "a" + strings.Repeat("b", 64), false},
		{"instance", ValidInstanceID, "yotlU2EYwJjSjaJ3zgdgzw", true},
		{"instance with a dot", ValidInstanceID, "a.b", false},
		{"empty instance", ValidInstanceID, "", false},
		{"job id", ValidJobID, "order-17.part=2", true},
		{"job id of 255 bytes", ValidJobID, strings.Repeat("a", MaxJobIDLen), true},
		{"job id of 256 bytes", ValidJobID, strings.Repeat("a", MaxJobIDLen+1), false},
		{"job id with two dots", ValidJobID, "a..b", false},
		{"job id ending with a dot", ValidJobID, "a.", false},
		{"job id with a wildcard", ValidJobID, "a.*", false},
		{"empty job id", ValidJobID, "", false},
		{"reserved job id", ReservedJobID, "auto-17-1700000000000", true},
		{"producer's job id", ReservedJobID, "order-17", false},
		{"notify subject", ValidNotifySubject, "notify.orders.17", true},
		{"notify wildcard", ValidNotifySubject, "notify.>", false},
		{"notify empty token", ValidNotifySubject, "notify..a", false},
		{"notify outside its prefix", ValidNotifySubject, "results.a", false},
		{"notify with a space", ValidNotifySubject, "notify.a b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.valid(tc.in); got != tc.want {
				t.Fatalf("%q: got %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzValidAlgorithmName holds ValidAlgorithmName to the rule it
// documents, written as a regular expression.
func FuzzValidAlgorithmName(f *testing.F) {
	rule := regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	for _, s := range []string{"", "a", "language_detection", "1abc", "a.b", "A", "a-b", "_a", "a_", "z9", "a\n",
		"a" + strings.Repeat("b", 63), "a" + strings.Repeat("b", 64), "é", "aé", "a{", "a`", "a/", "a:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := ValidAlgorithmName(name), rule.MatchString(name); got != want {
			t.Fatalf("ValidAlgorithmName(%q) = %v, the rule says %v", name, got, want)
		}
	})
}
