package controller

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

func TestRetryDelay(t *testing.T) {
	cfg := Config{RetryBackoff: time.Second, MaxRetryBackoff: 5 * time.Second}
	tests := []struct {
		name     string
		attempts int
		base     time.Duration // before jitter
	}{
		{"after the first attempt", 1, time.Second},
		{"after the second", 2, 2 * time.Second},
		{"after the third", 3, 4 * time.Second},
		{"capped", 4, 5 * time.Second},
		{"far past the cap", 60, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 {
				d := retryDelay(cfg, tt.attempts)
				lo := time.Duration(float64(tt.base) * 0.8)
				hi := min(time.Duration(float64(tt.base)*1.2), cfg.MaxRetryBackoff)
				if d < lo || d > hi {
					t.Fatalf("retryDelay(%d) = %s, want within [%s, %s]", tt.attempts, d, lo, hi)
				}
			}
		})
	}
}

func TestJobIDOf(t *testing.T) {
	stored := time.UnixMilli(1_700_000_000_123)
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 42}, Timestamp: stored}
	tests := []struct {
		name   string
		header nats.Header
		want   string
	}{
		{"Pnp-Job-Id wins", nats.Header{HeaderJobID: {"replayed"}, HeaderMsgID: {"replayed@replay-3"}}, "replayed"},
		{"Nats-Msg-Id", nats.Header{HeaderMsgID: {"abc"}}, "abc"},
		{"no header: from the stream", nil, "auto-42-1700000000123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := jobIDOf(tt.header, md); got != tt.want {
				t.Errorf("jobIDOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidJobID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"abc", true},
		{"7f9c2ba4-e88f-11e8-9f32-f2801f1b9fd1", true},
		{"order.123", true},
		{"a=b_c-d", true},
		{"auto-42-1700000000123", true},
		{"", false},
		{".abc", false},
		{"abc.", false},
		{"a..b", false},
		{"a b", false},
		{"a*b", false},
		{"a>b", false},
		{"a:b", false},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("x", 256), false},
	}
	for _, tt := range tests {
		if got := ValidJobID(tt.id); got != tt.want {
			t.Errorf("ValidJobID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		errs []string
	}{
		{name: "zero value", cfg: Config{}},
		{name: "negatives", cfg: Config{MaxInFlight: -1, MaxAttempts: -1, RetryBackoff: -1, DrainTimeout: -1},
			errs: []string{"max in flight", "max attempts", "retry backoff", "drain timeout"}},
		{name: "tiny ack wait", cfg: Config{AckWait: time.Millisecond}, errs: []string{"ack wait"}},
		{name: "cap below base", cfg: Config{RetryBackoff: time.Minute, MaxRetryBackoff: time.Second}, errs: []string{"max retry backoff"}},
		{name: "bad instance", cfg: Config{Instance: "a.b"}, errs: []string{"instance"}},
		{name: "trust bounds", cfg: Config{SchemaCacheBytes: -1, SchemaCompileTimeout: -1, MaxAlgorithms: -1, ConsumerInactiveThreshold: time.Millisecond},
			errs: []string{"schema cache bytes", "schema compile timeout", "max algorithms", "consumer inactive threshold"}},
		{name: "store", cfg: Config{Store: StoreConfig{ResultTTL: time.Millisecond, Replicas: 9, Discovery: discovery.Config{TTL: time.Second}}},
			errs: []string{"result ttl", "replicas", "discovery: ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors about %v", tt.errs)
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	var cfg Config
	cfg.setDefaults()
	if cfg.MaxInFlight != 64 || cfg.AckWait != 30*time.Second || cfg.MaxAttempts != 5 ||
		cfg.RetryBackoff != time.Second || cfg.MaxRetryBackoff != time.Minute || cfg.Instance == "" {
		t.Errorf("defaults %+v", cfg)
	}
}

// The hand-written encoder must produce exactly what encoding/json does.
func TestResultAppendJSON(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 891000000, time.UTC)
	later := at.Add(1500 * time.Millisecond)
	d := 1500.25
	tests := []struct {
		name string
		rec  Result
	}{
		{"succeeded", Result{JobID: "a.b-c", Algorithm: "echo", Status: StatusSucceeded, Output: json.RawMessage(`{"n":1,"s":"x"}`),
			Attempts: 2, Instance: "i1", Version: "1.0.0", Controller: "c1", SubmittedAt: at, StartedAt: at, FinishedAt: &later, DurationMS: &d,
			Input: json.RawMessage(`{"image_url":"obj://uploads/a/b.jpg"}`), InputBytes: 38, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}},
		{"failed", Result{JobID: "x", Algorithm: "echo", Status: StatusFailed, Attempts: 0, SubmittedAt: at, StartedAt: at, FinishedAt: &later, DurationMS: new(float64),
			Error: &protocol.Error{Code: 400, Message: "bad <input> & \"quotes\"", Violations: []schemas.Violation{{Pointer: "/n", Message: "expected integer"}}}, DeadLetterSeq: 7}},
		{"retrying", Result{JobID: "r", Algorithm: "echo", Status: StatusRetrying, Attempts: 1, Controller: "ctl\u00e9\n", SubmittedAt: at, StartedAt: at,
			FinishedAt: &at, NextAttemptAt: &later, Error: &protocol.Error{Code: 504, Message: "no reply"}}},
		{"running", Result{JobID: "p", Algorithm: "echo", Status: StatusRunning, Attempts: 1, Instance: "i1", SubmittedAt: at, StartedAt: at,
			Progress: &jobs.Progress{Fraction: 1e-7, Message: "step <2> of 3", UpdatedAt: later}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendJSON(nil, &tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("appendJSON:\n%s\nencoding/json:\n%s", got, want)
			}
		})
	}
}

func TestValidNotifySubject(t *testing.T) {
	for subj, want := range map[string]bool{
		"notify.a":                           true,
		"notify.orders.17":                   true,
		"notify.x-y_z.$weird":                true,
		"notify":                             false,
		"notify.":                            false,
		"notify..a":                          false,
		"notify.a.":                          false,
		"notify.*":                           false,
		"notify.a.>":                         false,
		"notify.a b":                         false,
		"notify.a\tb":                        false,
		"$KV.results.victim":                 false,
		"dead.nt":                            false,
		"jobs.nt":                            false,
		"xnotify.a":                          false,
		"notify." + strings.Repeat("a", 250): false,
	} {
		if got := ValidNotifySubject(subj); got != want {
			t.Errorf("ValidNotifySubject(%q) = %v, want %v", subj, got, want)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Errorf("truncate cut a rune: %q", got)
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Errorf("truncate(abc, 5) = %q", got)
	}
}
