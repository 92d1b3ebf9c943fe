package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// cliRecord is the registration of a runner made of the nats CLI alone,
// as docs/PROTOCOL.md shows it.
const cliRecord = `{"algorithm":"echo","version":"1.0.0","instance":"cli-1","subject":"run.echo","queue_group":"runners",
 "input_schema":{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}},
 "output_schema":{"type":"object"},"timeout_ms":5000,"max_concurrency":1}`

// A runner written with the stock nats CLI: pnp register keeps its record
// alive and deletes it on exit, nats reply serves it, and its replies
// (printenv adds a newline) are stored as compact JSON.
func TestCLIOnlyRunner(t *testing.T) {
	isolateEnv(t)
	natsBin := natsCLI(t)
	srv := natstest.Start(t)
	url := srv.URL()
	if code, out, errOut := runPnp(t, "provision", "--server", url); code != 0 {
		t.Fatalf("pnp provision: exit %d\n%s%s", code, out, errOut)
	}
	path := filepath.Join(t.TempDir(), "echo.json")
	if err := os.WriteFile(path, []byte(cliRecord), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startPnp(t, "register", "--server", url, "--record", path)
	reg.waitOutput(t, "registered echo.cli-1")
	if keys := listKeys(t, url); !slices.Contains(keys, "echo.cli-1") {
		t.Fatalf("keys = %v, want echo.cli-1", keys)
	}
	if natsBin != "" {
		ctx, cancel := context.WithCancel(context.Background())
		reply := exec.CommandContext(ctx, natsBin, "--server", url, "reply", "run.echo", "--queue", "runners", "--command", "printenv NATS_REQUEST_BODY")
		if err := reply.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); _ = reply.Wait() })
		startPnp(t, "controller", "--server", url, "--log-level", "warn")
		var out, errOut string
		natstest.Eventually(t, 30*time.Second, func() bool {
			var code int
			code, out, errOut = runPnp(t, "submit", "--server", url, "--wait-timeout", "5s", "echo", `{"text":"hi"}`)
			return code == 0
		}, "job on the CLI runner did not succeed")
		id := strings.SplitN(out, "\n", 2)[0]
		nc := srv.Connect()
		js := mustJetStream(t, nc)
		kv, err := js.KeyValue(context.Background(), jobs.ResultsBucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("result %s: %v\n%s%s", id, err, out, errOut)
		}
		if !strings.Contains(string(e.Value()), `"output":{"text":"hi"},`) {
			t.Errorf("stored record %s; want the output compact", e.Value())
		}
	}
	if code := reg.stop(t); code != 0 {
		t.Fatalf("pnp register: exit %d after interruption\n%s", code, reg.stderr.String())
	}
	if keys := listKeys(t, url); slices.Contains(keys, "echo.cli-1") {
		t.Fatalf("keys after pnp register stopped = %v, want echo.cli-1 deleted", keys)
	}
	if code, _, errOut := runPnp(t, "register", "--server", url, "--record", "/nonexistent.json"); code == 0 {
		t.Errorf("pnp register with a missing file: exit 0\n%s", errOut)
	}
}

func mustJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
