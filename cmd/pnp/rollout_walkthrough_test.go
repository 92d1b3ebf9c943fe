package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// walkthroughCommands returns the commands of the fenced sh blocks of the
// section of path whose heading starts with section, in order, with the
// line each came from.
func walkthroughCommands(t *testing.T, path, section string) []shownCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []shownCommand
	in, block := false, ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, section)
			continue
		}
		if !in {
			continue
		}
		if fence, ok := strings.CutPrefix(line, "```"); ok {
			if block == "" {
				block = fence
				if block == "" {
					block = "text"
				}
			} else {
				block = ""
			}
			continue
		}
		if block != "sh" || strings.TrimSpace(line) == "" {
			continue
		}
		for _, args := range splitCommands(line) {
			out = append(out, shownCommand{where: fmt.Sprintf("%s:%d", filepath.Base(path), n), line: line, args: args})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRolloutWalkthrough runs docs/ROLLOUT.md's walkthrough as written,
// from the repository, in its order: pnp up with version 1.0.0 of a Python
// worker, traffic, a pinned route, version 2.0.0 of the same adapter
// started with other --worker-env settings (no edit), replay, shadow,
// canary, promotion. Each command must succeed (a command whose effect
// lands in the background, as a shadow's comparison, is tried again for
// a while, as a user would); pnp up gets a free address and its own data
// directory, the rest finds it through NATS_URL.
func TestRolloutWalkthrough(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/usr/bin/python3 is missing; the walkthrough runs its worker with it")
		}
		t.Skip("no /usr/bin/python3")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import sklearn").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/usr/bin/python3 cannot import sklearn (Debian: python3-sklearn)")
		}
		t.Skip("/usr/bin/python3 lacks sklearn")
	}
	isolateEnv(t)
	natsBin := natsCLI(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmds := walkthroughCommands(t, filepath.Join(root, "docs", "ROLLOUT.md"), `## From "new model trained"`)
	if len(cmds) < 20 {
		t.Fatalf("found %d commands in the walkthrough, want its whole sequence", len(cmds))
	}
	t.Chdir(root)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	t.Setenv("NATS_URL", url)
	home := t.TempDir()
	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home)

	ran := map[string]int{}
	for _, c := range cmds {
		args, isPnp := pnpArgs(c.args)
		switch {
		case isPnp && len(args) > 0 && args[0] == "up":
			up := startPnp(t, append(args, "--listen", addr, "--data", t.TempDir(), "--log-level", "warn")...)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("pnp up's log:\n%s", up.stderr.String())
				}
			})
			up.waitOutput(t, "Ctrl-C stops it.")
			if !strings.Contains(up.stdout.String(), "iris_species 1.0.0") {
				t.Fatalf("%s: pnp up does not serve iris_species 1.0.0:\n%s", c.where, up.stdout.String())
			}
		case isPnp && longRunning(args):
			r := startPnp(t, append(args, "--log-level", "warn")...)
			// A runner is started once it serves: wait for its version
			// in the listing, as the walkthrough's next step checks.
			version := ""
			for _, a := range args {
				if v, ok := strings.CutPrefix(a, "IRIS_VERSION="); ok {
					version = v
				}
			}
			if version == "" {
				t.Fatalf("%s: a long-running command of the walkthrough that starts no IRIS_VERSION: %s", c.where, c.line)
			}
			retry(t, c, func() (string, bool) {
				out, ok := runIn(nil, []string{"algorithms"})
				return out + r.stderr.String(), ok && strings.Contains(out, "iris_species  "+version)
			})
		case isPnp:
			retry(t, c, func() (string, bool) { return runIn(nil, args) })
		case c.args[0] == "nats":
			if natsBin == "" {
				continue
			}
			retry(t, c, func() (string, bool) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, natsBin, c.args[1:]...)
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				return string(out), err == nil && !bytes.Contains(out, []byte("Nats-Service-Error-Code"))
			})
		default:
			t.Fatalf("%s: the walkthrough runs %q, which this test does not know how to run", c.where, c.line)
		}
		ran[c.args[0]]++
	}
	if ran["pnp"] < 20 {
		t.Errorf("ran %d pnp commands, want the whole walkthrough", ran["pnp"])
	}
	// The walkthrough ends with 2.0.0 promoted and the route cleared.
	out, ok := runIn(nil, []string{"result", "canary-1"})
	if !ok || !strings.Contains(out, `"status": "succeeded"`) {
		t.Errorf("pnp result canary-1 after the walkthrough:\n%s", out)
	}
}

// runIn runs pnp args in-process and returns its output and whether it
// exited 0.
func runIn(_ []string, args []string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), pnpTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return out.String() + errOut.String(), code == 0
}

// retry runs check until it succeeds, for at most 30 s: what a step
// starts in the background (a shadow's comparison, a runner's
// registration) may land a moment after the command returns.
func retry(t *testing.T, c shownCommand, check func() (string, bool)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, ok := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s\nfailed for 30s; last output:\n%s", c.where, c.line, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
