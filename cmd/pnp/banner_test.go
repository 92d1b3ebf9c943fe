package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shownCommand is a command a user is shown: its words and the line it
// came from (with its comment, which may announce an error reply).
type shownCommand struct {
	where string
	line  string
	args  []string
}

// readmeCommands are the commands of README.md's console sessions (lines
// "$ nats ..." and "$ go run ./cmd/pnp ..."), in order.
func readmeCommands(t *testing.T) []shownCommand {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []shownCommand
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !strings.HasPrefix(line, "$ nats ") && !strings.HasPrefix(line, "$ go run ./cmd/pnp ") {
			continue
		}
		for _, args := range splitCommands(strings.TrimPrefix(line, "$ ")) {
			out = append(out, shownCommand{where: "README.md:" + strconv.Itoa(n), line: line, args: args})
		}
	}
	return out
}

// pnpArgs returns the arguments of a pnp command spelled pnp or
// go run ./cmd/pnp, and whether args is one.
func pnpArgs(args []string) ([]string, bool) {
	switch {
	case len(args) >= 1 && args[0] == "pnp":
		return args[1:], true
	case len(args) >= 3 && args[0] == "go" && args[1] == "run" && args[2] == "./cmd/pnp":
		return args[3:], true
	}
	return nil, false
}

// longRunning reports whether pnp args runs until interrupted.
func longRunning(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "up", "runner", "controller", "bench", "chaos":
		return true
	case "discovery":
		return len(args) > 1 && args[1] == "watch"
	}
	return false
}

// TestBannerCommands runs, against pnp up, the commands of the README's
// quick start and every command pnp up's banner prints (parsed from the
// banner, not copied), each as typed — the server comes from NATS_URL, as
// it would for a user with pnp up on its default address — and checks
// that each one succeeds; a request reply is an error only where the
// line's comment announces one. So the README, the banner and the program
// cannot drift apart.
func TestBannerCommands(t *testing.T) {
	isolateEnv(t)
	natsBin := natsCLI(t)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn")
	up.waitOutput(t, "Ctrl-C stops it.")
	// The user's environment for the commands: NATS_URL names this server
	// (for pnp as for the nats CLI), and no nats CLI context interferes.
	t.Setenv("NATS_URL", url)
	home := t.TempDir()
	env := append(os.Environ(), "NATS_URL="+url, "HOME="+home, "XDG_CONFIG_HOME="+home)

	var cmds []shownCommand
	for _, c := range bannerLines(up.stdout.String()) {
		// The banner names the server explicitly; drop it so that the
		// commands run as a user of the default address types them.
		c.args = dropServer(c.args)
		cmds = append(cmds, c)
	}
	if len(cmds) < 10 {
		t.Fatalf("banner has %d commands:\n%s", len(cmds), up.stdout.String())
	}
	cmds = append(cmds, readmeCommands(t)...)

	ran := 0
	for _, c := range cmds {
		wantError := strings.Contains(c.line, "# a 4")
		check := func() (string, bool) {
			if pargs, ok := pnpArgs(c.args); ok {
				if c.args[0] == "pnp" {
					// Run in-process below, but typed as "pnp" it works
					// only with pnp on PATH.
					if _, err := exec.LookPath("pnp"); err != nil {
						return "spelled pnp, but there is no pnp on PATH", false
					}
				}
				if longRunning(pargs) {
					return "", true
				}
				ctx, cancel := context.WithTimeout(context.Background(), pnpTimeout)
				defer cancel()
				var out, errOut bytes.Buffer
				code := run(ctx, pargs, &out, &errOut)
				return out.String() + errOut.String(), code == 0
			}
			if c.args[0] != "nats" || natsBin == "" {
				return "", true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, natsBin, c.args[1:]...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			ok := err == nil
			if ok && len(c.args) > 1 && slices.Contains(c.args, "req") && !wantError {
				ok = !bytes.Contains(out, []byte("Nats-Service-Error-Code"))
			}
			return string(out), ok
		}
		// A job's result appears a moment after it is published: poll.
		var out string
		deadline := time.Now().Add(15 * time.Second)
		for {
			var ok bool
			if out, ok = check(); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %s\nfailed:\n%s", c.where, c.line, out)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		ran++
	}
	t.Logf("%d commands run", ran)
}

// dropServer removes -s URL / --server URL from a command.
func dropServer(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if (args[i] == "-s" || args[i] == "--server") && i+1 < len(args) {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}
