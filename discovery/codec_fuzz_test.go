package discovery

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func validRecordJSON(f *testing.F) []byte {
	f.Helper()
	b, err := json.Marshal(Registration{
		Algorithm: "word_count", Version: "1.0.0", Instance: "abc123",
		Subject: "run.word_count", QueueGroup: "runners",
		InputSchema: json.RawMessage(`{"type":"object"}`), OutputSchema: json.RawMessage(`{}`),
		TimeoutMS: 1000, MaxConcurrency: 4,
		StartedAt: time.Unix(1_700_000_000, 0).UTC(), HeartbeatAt: time.Unix(1_700_000_001, 0).UTC(),
		Metadata: map[string]string{"k": "v"},
	})
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzCodecDecode feeds hostile registration records, as anyone with write
// access to the discovery bucket could store them, to the codec every
// reader (controller cache, `pnp algorithms`) goes through. A record must
// never panic the reader, must be refused with ErrInvalidRecord unless it
// satisfies the schema, and is never accepted under a key other than its
// own: one runner cannot shadow another's entry.
func FuzzCodecDecode(f *testing.F) {
	c, err := NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	valid := validRecordJSON(f)
	f.Add("word_count.abc123", valid)
	f.Add("word_count.other", valid)
	f.Add("other.abc123", valid)
	f.Add("word_count.abc123.extra", valid)
	f.Add("", valid)
	f.Add("word_count.abc123", []byte(`{}`))
	f.Add("word_count.abc123", []byte(`null`))
	f.Add("word_count.abc123", []byte(``))
	f.Add("word_count.abc123", []byte("\xff\xfe\x00"))
	f.Add("word_count.abc123", []byte(`{"algorithm":"word_count","version":"1.0.0","instance":"abc123","subject":"run.word_count","queue_group":"runners","input_schema":{},"output_schema":{},"timeout_ms":1e400,"max_concurrency":4,"started_at":"2024-01-01T00:00:00Z","heartbeat_at":"2024-01-01T00:00:00Z"}`))
	f.Add("word_count.abc123", []byte(`{"algorithm":"word_count","version":"1.0.0","instance":"abc123","subject":"run.word_count","queue_group":"runners","input_schema":{},"output_schema":{},"timeout_ms":99999999999999999999999,"max_concurrency":4,"started_at":"2024-01-01T00:00:00Z","heartbeat_at":"2024-01-01T00:00:00Z"}`))
	f.Add("word_count.abc123", []byte(`{"algorithm":"word_count","version":"1.0.0","instance":"abc123","subject":"run.word_count","queue_group":"runners","input_schema":{},"output_schema":{},"timeout_ms":1,"max_concurrency":1.0,"started_at":"2024-01-01T00:00:00Z","heartbeat_at":"2024-01-01T00:00:00Z"}`))
	f.Add("word_count.abc123", []byte(`{"algorithm":"word_count","algorithm":"evil","version":"1.0.0","instance":"abc123","subject":"run.word_count","queue_group":"runners","input_schema":{},"output_schema":{},"timeout_ms":1,"max_concurrency":1,"started_at":"2024-01-01T00:00:00Z","heartbeat_at":"2024-01-01T00:00:00Z"}`))
	f.Add("word_count.abc123", []byte(`{"algorithm":"word_count","version":"1.0.0","instance":"abc123","subject":"run.word_count","queue_group":"runners","input_schema":{},"output_schema":{},"timeout_ms":1,"max_concurrency":1,"started_at":"+10000-01-01T00:00:00Z","heartbeat_at":"2024-02-30T25:00:00Z"}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		r, err := c.Decode(key, data)
		if err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("error does not wrap ErrInvalidRecord: %v", err)
			}
			if r.Algorithm != "" || r.Instance != "" {
				t.Fatalf("refused record returned with content: %+v", r)
			}
			return
		}
		if r.Key() != key {
			t.Fatalf("record for %q accepted under key %q", r.Key(), key)
		}
		if !ValidAlgorithmName(r.Algorithm) || !ValidInstanceID(r.Instance) {
			t.Fatalf("accepted invalid names: algorithm %q instance %q", r.Algorithm, r.Instance)
		}
		if r.TimeoutMS < 1 || r.MaxConcurrency < 1 {
			t.Fatalf("accepted timeout_ms %d max_concurrency %d", r.TimeoutMS, r.MaxConcurrency)
		}
		if r.Subject != "run."+r.Algorithm {
			t.Fatalf("accepted subject %q for algorithm %q", r.Subject, r.Algorithm)
		}
		if len(data) > MaxRecordSize {
			t.Fatalf("accepted a record of %d bytes", len(data))
		}
		if r.Subject == "" || r.QueueGroup == "" {
			t.Fatalf("accepted empty subject %q or queue group %q", r.Subject, r.QueueGroup)
		}
		// What a reader accepted, a writer can store again unchanged.
		b, err := c.Encode(r)
		if err != nil {
			t.Fatalf("accepted record does not encode again: %v", err)
		}
		r2, err := c.Decode(key, b)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if r2.Key() != r.Key() || r2.TimeoutMS != r.TimeoutMS || !r2.HeartbeatAt.Equal(r.HeartbeatAt) {
			t.Fatalf("round trip changed the record: %+v -> %+v", r, r2)
		}
	})
}
