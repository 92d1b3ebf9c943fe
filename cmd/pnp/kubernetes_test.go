package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/deploy/kubernetes"
)

// envFlags runs `pnp <command> --help` and returns, for every environment
// variable the help names ("(env NAME)"), the flag it sets.
func envFlags(t *testing.T, command string) map[string]string {
	t.Helper()
	code, stdout, stderr := runPnp(t, command, "--help")
	if code != 0 {
		t.Fatalf("pnp %s --help: exit %d: %s", command, code, stderr)
	}
	out := map[string]string{}
	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	envRef := regexp.MustCompile(`\(env ([A-Z0-9_]+)[;)]`)
	cur := ""
	for _, l := range strings.Split(stdout, "\n") {
		if m := flagLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
		}
		for _, m := range envRef.FindAllStringSubmatch(l, -1) {
			out[m[1]] = cur
		}
	}
	if len(out) == 0 {
		t.Fatalf("pnp %s --help names no environment variable", command)
	}
	return out
}

// TestKubernetesManifestsUseRealFlags: every container of
// deploy/kubernetes runs the image's pnp with a command and flags pnp
// accepts, and sets only environment variables pnp reads for that command,
// with values its flags accept: each command line is parsed by pnp's own
// flag set (with --help last, so nothing runs).
func TestKubernetesManifestsUseRealFlags(t *testing.T) {
	isolateEnv(t)
	_, objs, err := kubernetes.LoadBase("../../deploy/kubernetes/base")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, o := range objs {
		ps := o.PodSpec()
		if ps == nil {
			continue
		}
		for _, c := range ps.Containers {
			checked++
			if len(c.Command) > 0 || len(c.Args) == 0 {
				t.Errorf("%s: command %q args %q: want the image's entrypoint (pnp) with a subcommand", o, c.Command, c.Args)
				continue
			}
			vars := envFlags(t, c.Args[0])
			args := append([]string(nil), c.Args...)
			for _, e := range c.Env {
				flag, ok := vars[e.Name]
				switch {
				case !ok:
					t.Errorf("%s: env %s is not read by pnp %s", o, e.Name, c.Args[0])
				case e.ValueFrom == nil:
					args = append(args, "--"+flag+"="+e.Value)
				}
			}
			if code, _, stderr := runPnp(t, append(args, "--help")...); code != 0 {
				t.Errorf("%s: pnp %s: exit %d: %s", o, strings.Join(args, " "), code, stderr)
			}
		}
	}
	if checked < 7 {
		t.Errorf("checked %d containers, want every pnp process of the base", checked)
	}
	// The check itself: a flag pnp lacks, a bad value and a stray
	// argument before --help all fail.
	for _, bad := range [][]string{
		{"runner", "--no-such-flag", "1", "--help"},
		{"controller", "--drain-timeout", "soon", "--help"},
		{"runner", "stray", "--help"},
	} {
		if code, _, _ := runPnp(t, bad...); code == 0 {
			t.Errorf("pnp %s: exit 0", strings.Join(bad, " "))
		}
	}
	if vars := envFlags(t, "runner"); vars["NATS_URL"] != "server" || vars["PNP_DECODE_BUDGET"] != "decode-budget" {
		t.Errorf("runner's env map: %v", vars)
	}
}
