package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// wantCLIVersion is the natscli release these tests are written against and
// CI installs. Another version is used but reported.
const wantCLIVersion = "0.5.0"

// cliTimeout bounds every nats CLI run. It is far above what a command
// takes (tens of milliseconds) so that a slow CI machine does not fail, and
// still ends a hung subprocess.
const cliTimeout = 30 * time.Second

// natsCLI returns the path of the stock nats binary: $NATS_CLI, else nats on
// PATH, else $GOPATH/bin/nats (where `go install` puts it).
func natsCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NATS_CLI"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("NATS_CLI=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	candidates := []string{filepath.Join(build.Default.GOPATH, "bin", "nats")}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "nats"))
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	msg := "the stock nats CLI is not installed (looked at $NATS_CLI, PATH and " + strings.Join(candidates, ", ") +
		"); install it with: go install github.com/nats-io/natscli/nats@v" + wantCLIVersion
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// cli runs the nats binary against one server, isolated from the user's
// configuration: its own HOME, no NATS_* variables, no selected context.
type cli struct {
	bin  string
	url  string
	home string
}

func newCLI(t *testing.T, bin, url string) *cli {
	t.Helper()
	c := &cli{bin: bin, url: url, home: t.TempDir()}
	stdout, stderr, err := c.exec(t, "--version")
	if err != nil {
		t.Fatalf("%s --version: %v\nstderr: %s", c.bin, err, stderr)
	}
	// natscli prints its version on stdout or stderr depending on release.
	got := strings.TrimPrefix(strings.TrimSpace(stdout+stderr), "v")
	if got != wantCLIVersion {
		t.Logf("nats CLI %s reports version %q; these tests target %s", c.bin, got, wantCLIVersion)
	}
	return c
}

// run runs `nats -s <url> --no-context args...` and returns its stdout and
// stderr. It fails the test when the command does not exit 0.
func (c *cli) run(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := c.exec(t, append([]string{"-s", c.url, "--no-context"}, args...)...)
	if err != nil {
		t.Fatalf("nats %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout, stderr
}

func (c *cli) exec(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = []string{
		"HOME=" + c.home,
		"XDG_CONFIG_HOME=" + filepath.Join(c.home, ".config"),
		"PATH=" + os.Getenv("PATH"),
		"NO_COLOR=1",
	}
	cmd.Dir = c.home
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return out.String(), errOut.String(), err
}

// startRunner starts an embedded NATS and a runner serving
// language_detection on it, and stops both at cleanup. It returns the
// server URL, a client connection and the runner.
func startRunner(t *testing.T) (string, *nats.Conn, *runner.Runner) {
	t.Helper()
	s := natstest.Start(t)
	nc := s.Connect()
	r, err := runner.New(nc, []*runner.Algorithm{runner.Must(languagedetection.New())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("runner: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("runner did not stop within 30s of cancellation")
		}
	})
	select {
	case <-r.Started():
	case err := <-errc:
		t.Fatalf("runner stopped before starting: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not start within 30s")
	}
	return s.URL(), nc, r
}

// decodeValid decodes a JSON document printed by the CLI into v after
// checking it against the schema file schemaName.
func decodeValid(t *testing.T, doc, schemaName string, v any) {
	t.Helper()
	sch, err := schemas.Compile(schemaName)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := schemas.DecodeJSON([]byte(doc))
	if err != nil {
		t.Fatalf("output is not one JSON document: %v\n%s", err, doc)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("output does not satisfy %s: %v\n%s", schemaName, err, doc)
	}
	if err := json.Unmarshal([]byte(doc), v); err != nil {
		t.Fatal(err)
	}
}

func TestNatsCLI(t *testing.T) {
	bin := natsCLI(t) // first: skip before starting anything
	url, nc, r := startRunner(t)
	c := newCLI(t, bin, url)
	instances := r.Instances()
	if len(instances) != 1 {
		t.Fatalf("runner instances = %v, want one", instances)
	}
	key := instances[0]
	instanceID := strings.TrimPrefix(key, languagedetection.Name+".")

	t.Run("kv ls discovery lists the instance key", func(t *testing.T) {
		stdout, _ := c.run(t, "kv", "ls", "discovery")
		keys := strings.Fields(stdout)
		if !slices.Contains(keys, key) {
			t.Fatalf("nats kv ls discovery printed %q, want the key %s", stdout, key)
		}
	})

	t.Run("kv get returns the registration record", func(t *testing.T) {
		stdout, _ := c.run(t, "kv", "get", "discovery", key, "--raw")
		var rec struct {
			Algorithm string `json:"algorithm"`
			Instance  string `json:"instance"`
			Subject   string `json:"subject"`
		}
		decodeValid(t, stdout, "registration.json", &rec)
		if rec.Algorithm != languagedetection.Name || rec.Instance != instanceID || rec.Subject != "run.language_detection" {
			t.Fatalf("record = %+v, want algorithm %s, instance %s, subject run.language_detection", rec, languagedetection.Name, instanceID)
		}
	})

	t.Run("req returns the output", func(t *testing.T) {
		stdout, stderr := c.run(t, "req", "run.language_detection", `{"text":"Le renard brun saute par-dessus le chien paresseux"}`)
		if strings.Contains(stderr, protocol.HeaderErrorCode) {
			t.Fatalf("success reply carries an error header:\n%s", stderr)
		}
		var out languagedetection.Output
		decodeValid(t, stdout, "language_detection.output.json", &out)
		if out.Language != "fra" || out.ISO6391 != "fr" {
			t.Fatalf("language = %q (%q), want fra (fr); output:\n%s", out.Language, out.ISO6391, stdout)
		}
	})

	for _, tc := range []struct {
		name        string
		body        string
		wantPointer string // "" when the body has no violations
		wantMessage string
	}{
		{name: "wrong type", body: `{"text":42}`, wantPointer: "/text", wantMessage: "input does not match the schema"},
		{name: "missing field", body: `{}`, wantPointer: "", wantMessage: "input does not match the schema"},
		{name: "malformed JSON", body: `{`, wantMessage: "malformed JSON"},
	} {
		t.Run("req with "+tc.name+" gets a 400", func(t *testing.T) {
			// natscli prints reply headers on stderr and the body on
			// stdout; it exits 0 for an error reply, since it did get one.
			stdout, stderr := c.run(t, "req", "run.language_detection", tc.body)
			if !strings.Contains(stderr, protocol.HeaderErrorCode+": 400") {
				t.Errorf("stderr lacks the header %q:\n%s", protocol.HeaderErrorCode+": 400", stderr)
			}
			if !strings.Contains(stderr, protocol.HeaderError+": "+tc.wantMessage) {
				t.Errorf("stderr lacks the header %q:\n%s", protocol.HeaderError+": "+tc.wantMessage, stderr)
			}
			var body protocol.Error
			decodeValid(t, stdout, "error.json", &body)
			if body.Code != 400 || !strings.HasPrefix(body.Message, tc.wantMessage) {
				t.Errorf("body code %d message %q, want 400 %q...", body.Code, body.Message, tc.wantMessage)
			}
			if body.Algorithm != languagedetection.Name || body.Instance != instanceID {
				t.Errorf("body names %s/%s, want %s/%s", body.Algorithm, body.Instance, languagedetection.Name, instanceID)
			}
			if tc.wantMessage == "malformed JSON" {
				if len(body.Violations) != 0 {
					t.Errorf("malformed JSON has violations %v, want none", body.Violations)
				}
				return
			}
			found := false
			for _, v := range body.Violations {
				found = found || v.Pointer == tc.wantPointer
			}
			if !found {
				t.Errorf("violations %v lack the pointer %q; body:\n%s", body.Violations, tc.wantPointer, stdout)
			}
		})
	}

	t.Run("micro ls lists the service", func(t *testing.T) {
		stdout, _ := c.run(t, "micro", "ls", "--json")
		var infos []micro
		if err := json.Unmarshal([]byte(stdout), &infos); err != nil {
			t.Fatalf("nats micro ls --json: %v\n%s", err, stdout)
		}
		for _, s := range infos {
			if s.Name == languagedetection.Name && s.ID == instanceID {
				return
			}
		}
		t.Fatalf("nats micro ls --json does not list %s %s:\n%s", languagedetection.Name, instanceID, stdout)
	})

	t.Run("micro info shows the endpoint", func(t *testing.T) {
		stdout, _ := c.run(t, "micro", "info", languagedetection.Name, instanceID, "--json")
		var info struct {
			Info micro `json:"info"`
		}
		if err := json.Unmarshal([]byte(stdout), &info); err != nil {
			t.Fatalf("nats micro info --json: %v\n%s", err, stdout)
		}
		s := info.Info
		if s.Name != languagedetection.Name || s.ID != instanceID || s.Version != "1.0.0" {
			t.Errorf("service %s %s %s, want %s %s 1.0.0", s.Name, s.ID, s.Version, languagedetection.Name, instanceID)
		}
		if len(s.Endpoints) != 1 {
			t.Fatalf("endpoints = %+v, want one", s.Endpoints)
		}
		ep := s.Endpoints[0]
		if ep.Subject != "run.language_detection" || ep.QueueGroup != runner.DefaultQueueGroup {
			t.Errorf("endpoint subject %q queue group %q, want run.language_detection in %s", ep.Subject, ep.QueueGroup, runner.DefaultQueueGroup)
		}
		if ep.Metadata["discovery_key"] != key {
			t.Errorf("endpoint metadata discovery_key = %q, want %s", ep.Metadata["discovery_key"], key)
		}
	})

	t.Run("micro stats counts requests", func(t *testing.T) {
		// One success and one 400 of its own, so the counts below hold
		// however the subtests are selected.
		for _, body := range []string{`{"text":"The quick brown fox jumps over the lazy dog"}`, `{"text":42}`} {
			if _, err := nc.Request("run.language_detection", []byte(body), 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		stdout, _ := c.run(t, "micro", "stats", languagedetection.Name, instanceID, "--json")
		var stats []micro
		if err := json.Unmarshal([]byte(stdout), &stats); err != nil {
			t.Fatalf("nats micro stats --json: %v\n%s", err, stdout)
		}
		if len(stats) != 1 || stats[0].ID != instanceID || len(stats[0].Endpoints) != 1 {
			t.Fatalf("stats = %+v, want one service %s with one endpoint", stats, instanceID)
		}
		ep := stats[0].Endpoints[0]
		if ep.Subject != "run.language_detection" || ep.NumRequests < 2 {
			t.Errorf("endpoint %s num_requests %d, want run.language_detection with at least 2", ep.Subject, ep.NumRequests)
		}
		d := ep.Data
		if d.Served < 1 || d.ErrorsByCode["400"] < 1 || d.MaxConcurrency < 1 {
			t.Errorf("endpoint data %+v, want served >= 1, errors_by_code[400] >= 1, max_concurrency >= 1", d)
		}
	})
}

// micro is the part of natscli's JSON for `micro ls/info/stats` these tests
// read: the NATS micro info and stats responses.
type micro struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	Version   string `json:"version"`
	Endpoints []struct {
		Name        string            `json:"name"`
		Subject     string            `json:"subject"`
		QueueGroup  string            `json:"queue_group"`
		Metadata    map[string]string `json:"metadata"`
		NumRequests int               `json:"num_requests"`
		Data        struct {
			Served         int              `json:"served"`
			MaxConcurrency int              `json:"max_concurrency"`
			ErrorsByCode   map[string]int64 `json:"errors_by_code"`
		} `json:"data"`
	} `json:"endpoints"`
}
