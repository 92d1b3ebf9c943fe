package controller

import (
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/protocol"
)

// kvKey is the key syntax of the NATS KV client (nats.go jetstream/kv.go):
// a job id the controller accepts must be usable as a results key.
var kvKey = regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)

// FuzzJobHeaders feeds the headers a producer controls — Pnp-Job-Id,
// Nats-Msg-Id, Pnp-Timeout — through the code that names and times a job
// (the dead-letter headers, deadCode and deadAt, are read back by package
// jobs's FuzzDeadLetterHeaders). A job id the
// controller accepts is always a valid results key and subject token; the
// id of a job without one is derived from its stream position and is
// always valid; nothing panics.
func FuzzJobHeaders(f *testing.F) {
	for _, s := range []struct {
		jobID, msgID, timeout, deadCode, deadAt string
		seq                                     uint64
		ms                                      int64
	}{
		{"job-1", "", "2s", "400", "2026-01-01T00:00:00Z", 1, 1_700_000_000_000},
		{"", "msg.1", "", "", "", 2, 0},
		{"", "", "500ms", "x", "yesterday", 0, -1},
		{"a..b", "b", "-1s", "99999999999999999999", "", 1 << 63, 1<<63 - 1},
		{".a", "", "0", "-0", "", 3, -62135596800000},
		{"a.", "", "1e9h", "", "", 4, 253402300799999},
		{"a*b", "a>b", "\x00", "", "", 5, 5},
		{"a b", "a\tb", "1h\n", "", "", 6, 6},
		{"é", "\xff", "9223372036854775807ns", "", "", 7, 7},
		{string(make([]byte, 256)), "", "", "", "", 8, 8},
	} {
		f.Add(s.jobID, s.msgID, s.timeout, s.deadCode, s.deadAt, s.seq, s.ms)
	}
	f.Fuzz(func(t *testing.T, jobID, msgID, timeout, deadCode, deadAt string, seq uint64, ms int64) {
		h := nats.Header{}
		if jobID != "" {
			h.Set(HeaderJobID, jobID)
		}
		if msgID != "" {
			h.Set(HeaderMsgID, msgID)
		}
		md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: seq}, Timestamp: time.UnixMilli(ms)}
		id := jobIDOf(h, md)
		switch {
		case jobID != "":
			if id != jobID {
				t.Fatalf("Pnp-Job-Id %q ignored: id %q", jobID, id)
			}
		case msgID != "":
			if id != msgID {
				t.Fatalf("Nats-Msg-Id %q ignored: id %q", msgID, id)
			}
		default:
			if !ValidJobID(id) {
				t.Fatalf("derived id %q is not a valid job id", id)
			}
			if again := jobIDOf(h, md); again != id {
				t.Fatalf("derived id not stable: %q then %q", id, again)
			}
		}
		if ValidJobID(id) {
			if !kvKey.MatchString(id) || id[0] == '.' || id[len(id)-1] == '.' {
				t.Fatalf("valid job id %q is not a valid KV key", id)
			}
			for i := 1; i < len(id); i++ {
				if id[i] == '.' && id[i-1] == '.' {
					t.Fatalf("valid job id %q has an empty subject token", id)
				}
			}
		}
		// Pnp-Timeout is parsed as the controller parses it; whatever it
		// holds, the budget it yields is positive or the job fails 400.
		if timeout != "" {
			if d, err := time.ParseDuration(timeout); err == nil && d > 0 {
				if min(protocol.DefaultTimeout, d) <= 0 {
					t.Fatalf("timeout %q gave a budget %s", timeout, d)
				}
			}
		}
		// The dead letters read back from such headers: jobs's
		// FuzzDeadLetterHeaders.
	})
}

// FuzzResultRecord checks the hand-written encoder of result records
// against encoding/json, with producer-controlled strings (job id,
// algorithm) and runner-controlled ones (instance, version, error message,
// output): the record stored must be valid JSON that reads back as
// json.Marshal would have written it.
func FuzzResultRecord(f *testing.F) {
	f.Add("job-1", "word_count", "inst", "1.0.0", "", 0, []byte(`{"n":1}`), 1)
	f.Add("j", "a", "", "", "boom \"quoted\" <tag> & \\ \n\t\x00", 500, []byte(nil), 3)
	f.Add("j", "a", "\xff\xfe", "\u2028\u2029", "é 😀 \xed\xa0\x80", 422, []byte(`[1, 2 ,{"a" : "b"}]`), 0)
	f.Add("j", "a", "i", "v", "m", 400, []byte(`1e400`), -1)
	f.Add("j", "a", "i", "v", "m", 400, []byte(`123456789012345678901234567890123456789012345678901234567890123`), 64)
	f.Fuzz(func(t *testing.T, id, alg, instance, version, msg string, code int, output []byte, attempts int) {
		at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		r := Result{JobID: id, Algorithm: alg, Status: StatusSucceeded, Attempts: attempts,
			Instance: instance, Version: version, Controller: "ctl", SubmittedAt: at, StartedAt: at}
		if json.Valid(output) {
			r.Output = output
		}
		if msg != "" || code != 0 {
			r.Status, r.Output = StatusFailed, nil
			r.Error = &protocol.Error{Code: code, Message: msg, Algorithm: alg, Instance: instance}
		}
		finish(&r, at.Add(time.Millisecond))
		got, err := appendJSON(nil, &r)
		if err != nil {
			t.Fatalf("appendJSON: %v", err)
		}
		if !json.Valid(got) {
			t.Fatalf("record is not valid JSON: %q", got)
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("record differs from encoding/json:\n got %s\nwant %s", got, want)
		}
		back, err := DecodeResult(id, got)
		if err != nil || back.Status != r.Status || back.Attempts != r.Attempts {
			t.Fatalf("record does not read back: %+v, %v", back, err)
		}
	})
}
