package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// hostile is text a registration, a dead letter or a result could carry to
// take over the terminal of whoever lists it: clear the screen, set the
// window title (OSC 0), write the clipboard (OSC 52), an 8-bit CSI, DEL, a
// right-to-left override, a tab and a newline that would fake a table row.
const hostile = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07\u009b31m\x7f\u202eevil\tcol\nFAKE ROW"

// terminalActive returns the first character in out that a terminal would
// act on rather than show (newline aside), or -1.
func terminalActive(out string) rune {
	for i, r := range out {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(out[i:]); n <= 1 {
				return r
			}
		}
		switch {
		case r == '\n':
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f:
			return r
		}
	}
	return -1
}

// TestHumanOutputEscapesControlCharacters writes hostile text through real
// NATS into every place pnp prints from — a registration's description and
// host, a discovery key, a job subject, a dead letter's id and reason, a
// result's error — and checks that no command lets a control character,
// escape sequence or bidirectional override reach the terminal, while the
// value is still shown (escaped).
func TestHumanOutputEscapesControlCharacters(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := jobs.Provision(ctx, js, jobs.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}

	rec := discovery.Registration{
		Algorithm: "evil", Version: "1.0.0", Instance: "i1", Subject: "run.evil", QueueGroup: "runners",
		Description: hostile, Host: hostile,
		InputSchema: json.RawMessage(`{"type":"object"}`), OutputSchema: json.RawMessage(`{"type":"object"}`),
		TimeoutMS: 1000, MaxConcurrency: 1, StartedAt: time.Now().UTC(),
	}
	if err := store.Registry().Register(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// A key no valid record can have: listed as invalid by watch.
	if err := nc.Publish("$KV.discovery.evil.\x1b]0;key\x07", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// A job on a subject with escapes in its algorithm token.
	if _, err := js.Publish(ctx, "jobs.\x1b[5mblink", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	dead := &nats.Msg{Subject: jobs.DeadSubjectPrefix + "evil", Data: []byte(`{}`), Header: nats.Header{}}
	dead.Header.Set(jobs.HeaderJobID, "job\x1b[31m")
	dead.Header.Set(jobs.HeaderDeadReason, hostile)
	dead.Header.Set(jobs.HeaderDeadCode, "422")
	if _, err := js.PublishMsg(ctx, dead); err != nil {
		t.Fatal(err)
	}
	res, err := json.Marshal(map[string]any{
		"job_id": "hostile-1", "algorithm": "evil", "status": "failed", "attempts": 1,
		"submitted_at": time.Now().UTC(), "started_at": time.Now().UTC(),
		"error": map[string]any{"code": 422, "message": hostile},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Results().Put(ctx, "hostile-1", res); err != nil {
		t.Fatal(err)
	}

	url := s.URL()
	cases := []struct {
		name string
		args []string
		// shown is an escaped form of the hostile value that must appear:
		// the value is printed, not dropped.
		shown string
	}{
		{"algorithms", []string{"algorithms"}, `\x1b]0;owned\x07`},
		{"discovery ls", []string{"discovery", "ls"}, `\x1b[2J`},
		{"jobs", []string{"jobs"}, `\x1b[5mblink`},
		{"dead ls", []string{"dead", "ls"}, `job\x1b[31m`},
		{"result", []string{"result", "hostile-1"}, `\u001b]52;c;`},
		{"result --wait", []string{"result", "--wait", "hostile-1"}, `\u202e`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stdout, stderr := runPnp(t, append(tc.args, "--server", url)...)
			for name, out := range map[string]string{"stdout": stdout, "stderr": stderr} {
				if r := terminalActive(out); r >= 0 {
					t.Errorf("%s of pnp %s holds %U:\n%q", name, strings.Join(tc.args, " "), r, out)
				}
			}
			if !strings.Contains(stdout+stderr, tc.shown) {
				t.Errorf("pnp %s does not show %s:\n%s\n%s", strings.Join(tc.args, " "), tc.shown, stdout, stderr)
			}
			if strings.Contains(stdout, "\nFAKE ROW") {
				t.Errorf("pnp %s let a value start a line of its own:\n%s", strings.Join(tc.args, " "), stdout)
			}
		})
	}

	t.Run("discovery watch", func(t *testing.T) {
		b := startPnp(t, "discovery", "watch", "--server", url)
		b.waitOutput(t, "# current registrations listed")
		b.stop(t)
		out := b.stdout.String() + b.stderr.String()
		if r := terminalActive(out); r >= 0 {
			t.Errorf("pnp discovery watch printed %U:\n%q", r, out)
		}
		for _, want := range []string{`host=\x1b[2J`, `INVALID evil.\x1b]0;key\x07`} {
			if !strings.Contains(out, want) {
				t.Errorf("pnp discovery watch does not show %s:\n%s", want, out)
			}
		}
	})
}
