package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"pnpworker/internal/natstest"
)

func provision(t *testing.T) *Store {
	t.Helper()
	srv := natstest.Start(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	s, err := Provision(context.Background(), js, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A record that stays corrupt past waitCorruptGrace is reported, not
// waited on for ever (the controller's
// TestResultOfAnotherJobIsCorruptionReliability covers the record it
// replaces).
func TestWaitResultReportsLastingCorruption(t *testing.T) {
	s := provision(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	rec := fmt.Sprintf(`{"job_id":"someone-else","algorithm":"echo","status":"succeeded","output":{"n":99},"attempts":1,"submitted_at":%q,"started_at":%q}`, now, now)
	if _, err := s.Results().Put(ctx, "victim", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	old := waitCorruptGrace
	waitCorruptGrace = 300 * time.Millisecond
	t.Cleanup(func() { waitCorruptGrace = old })
	start := time.Now()
	r, err := s.WaitResult(ctx, "victim", nil)
	if !errors.Is(err, ErrCorruptResult) || errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("WaitResult past the grace: %+v, %v after %s; want ErrCorruptResult soon after the grace", r, err, time.Since(start))
	}
}

// FuzzDeadLetterHeaders reads dead letters back from headers anyone with
// publish rights on dead.* could have written, as `pnp dead` does: nothing
// panics, and the algorithm, sequence and code read are what was written.
func FuzzDeadLetterHeaders(f *testing.F) {
	for _, s := range []struct {
		jobID, alg, attempts, deadCode, deadAt string
		seq                                    uint64
	}{
		{"job-1", "", "2s", "400", "2026-01-01T00:00:00Z", 1},
		{"", "msg.1", "", "", "", 2},
		{"", "", "500ms", "x", "yesterday", 0},
		{"a..b", "b", "-1s", "99999999999999999999", "", 1 << 63},
		{".a", "", "0", "-0", "", 3},
		{"a*b", "a>b", "\x00", "", "", 5},
		{"é", "\xff", "9223372036854775807", "", "", 7},
	} {
		f.Add(s.jobID, s.alg, s.attempts, s.deadCode, s.deadAt, s.seq)
	}
	f.Fuzz(func(t *testing.T, jobID, alg, attempts, deadCode, deadAt string, seq uint64) {
		dh := nats.Header{}
		dh.Set(HeaderJobID, jobID)
		dh.Set(HeaderDeadCode, deadCode)
		dh.Set(HeaderDeadAttempts, attempts)
		dh.Set(HeaderDeadAt, deadAt)
		d := deadLetter(seq, DeadSubjectPrefix+alg, dh, []byte(attempts))
		if d.Algorithm != alg || d.Seq != seq {
			t.Fatalf("dead letter misread: %+v", d)
		}
		if c, err := strconv.Atoi(deadCode); err == nil && d.Code != c {
			t.Fatalf("dead code %q read as %d", deadCode, d.Code)
		}
	})
}
