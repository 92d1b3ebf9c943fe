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

	"github.com/pnpworker/pnpworker/internal/natstest"
)

func provision(t testing.TB) *Store {
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

// ReplayDead replays the dead letters of the ids named, or every one of an
// algorithm, and names each id without a dead letter; what it replayed is
// a job again and no longer a dead letter.
func TestReplayDead(t *testing.T) {
	s := provision(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, l := range []struct{ alg, id string }{{"alg_a", "j1"}, {"alg_a", "j2"}, {"alg_b", "j3"}} {
		m := &nats.Msg{Subject: DeadSubjectPrefix + l.alg, Data: []byte(`{}`), Header: nats.Header{}}
		m.Header.Set(HeaderJobID, l.id)
		m.Header.Set(HeaderDeadCode, "504")
		if _, err := s.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(t *testing.T, rs []Replayed) []string {
		t.Helper()
		var out []string
		for _, r := range rs {
			if r.Err != nil || r.Submission.ID != r.Letter.JobID || r.Submission.Seq == 0 {
				t.Errorf("replay of %s: %+v, %v", r.Letter.JobID, r.Submission, r.Err)
			}
			out = append(out, r.Letter.JobID)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		algorithm string
		ids       []string
		replayed  []string
		missing   string // the error's text, "" for none
	}{
		{"named ids, one without a dead letter", "", []string{"j1", "nope"}, []string{"j1"}, "no dead letter for job nope"},
		{"every one of an algorithm", "alg_b", nil, []string{"j3"}, ""},
		{"every one left", "", nil, []string{"j2"}, ""},
		{"none left", "", nil, nil, ""},
		{"a replayed id has none", "", []string{"j1"}, nil, "no dead letter for job j1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ReplayDead(ctx, tc.algorithm, tc.ids)
			if replayed := ids(t, got); fmt.Sprint(replayed) != fmt.Sprint(tc.replayed) {
				t.Errorf("replayed %v, want %v", replayed, tc.replayed)
			}
			switch {
			case tc.missing == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.missing != "" && (!errors.Is(err, ErrNoDeadLetter) || err.Error() != tc.missing):
				t.Errorf("error %v, want %q wrapping ErrNoDeadLetter", err, tc.missing)
			}
		})
	}
	info, err := s.jobs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("JOBS holds %d jobs, want the 3 replayed", info.State.Msgs)
	}
	if left, err := s.DeadLetters(ctx, ""); err != nil || len(left) != 0 {
		t.Errorf("dead letters left: %v, %v", left, err)
	}
}

// AwaitStore waits for streams provisioned after it started, gives up
// after its tries with the last attempt's error, and returns the
// context's error when the context ends during a wait.
func TestAwaitStore(t *testing.T) {
	connect := func(t *testing.T) jetstream.JetStream {
		t.Helper()
		js, err := jetstream.New(natstest.Start(t).Connect())
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	t.Run("provisioned later", func(t *testing.T) {
		js := connect(t)
		retried := make(chan struct{}, 1)
		type opened struct {
			s   *Store
			err error
		}
		done := make(chan opened, 1)
		go func() {
			s, err := AwaitStore(context.Background(), js, StoreConfig{}, AwaitConfig{Interval: 20 * time.Millisecond, OnRetry: func(int, error) {
				select {
				case retried <- struct{}{}:
				default:
				}
			}})
			done <- opened{s, err}
		}()
		select {
		case <-retried:
		case <-time.After(30 * time.Second):
			t.Fatal("no failed attempt before the streams exist")
		}
		if _, err := Provision(context.Background(), js, StoreConfig{}); err != nil {
			t.Fatal(err)
		}
		select {
		case o := <-done:
			if o.err != nil || o.s == nil {
				t.Fatalf("AwaitStore = %v, %v after provisioning", o.s, o.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("AwaitStore did not open the streams provisioned meanwhile")
		}
	})
	t.Run("gives up after its tries", func(t *testing.T) {
		var tries []int
		_, err := AwaitStore(context.Background(), connect(t), StoreConfig{}, AwaitConfig{Tries: 3, Interval: time.Millisecond, OnRetry: func(try int, _ error) { tries = append(tries, try) }})
		var ae *AwaitError
		if !errors.As(err, &ae) || ae.Tries != 3 || !errors.Is(err, ErrNotProvisioned) {
			t.Fatalf("error %v, want an *AwaitError after 3 tries wrapping ErrNotProvisioned", err)
		}
		if fmt.Sprint(tries) != "[1 2]" {
			t.Errorf("OnRetry called for tries %v, want [1 2]", tries)
		}
	})
	t.Run("context ends during a wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := AwaitStore(ctx, connect(t), StoreConfig{}, AwaitConfig{Interval: time.Hour, OnRetry: func(int, error) { cancel() }})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		var ae *AwaitError
		if errors.As(err, &ae) {
			t.Errorf("a context ended during a wait is not giving up: %v", err)
		}
	})
}
