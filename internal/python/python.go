// Package python finds a Python interpreter for tests that run Python
// workers.
package python

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Candidates are the interpreters tried, in order: Debian's own first, since
// it sees the apt-installed modules (python3-sklearn, ...).
var Candidates = []string{"/usr/bin/python3", "python3"}

// Find returns the first candidate that is Python 3.9 or newer and can
// import every module named. With none, the test is skipped, or failed when
// the environment variable CI is set: CI installs Python and must not skip.
func Find(t testing.TB, modules ...string) string {
	t.Helper()
	if p, ok := Lookup(modules...); ok {
		return p
	}
	msg := "no python3 >= 3.9 that can import " + strings.Join(append([]string{"sys"}, modules...), ", ") +
		" (tried " + strings.Join(Candidates, ", ") + "); on Debian: apt-get install python3 python3-sklearn"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Lookup is Find without a test: the interpreter's path and whether one
// was found.
func Lookup(modules ...string) (string, bool) {
	check := "import sys\nassert sys.version_info >= (3, 9)\n"
	for _, m := range modules {
		check += "import " + m + "\n"
	}
	for _, c := range Candidates {
		p, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = exec.CommandContext(ctx, p, "-c", check).Run()
		cancel()
		if err == nil {
			return p, true
		}
	}
	return "", false
}
