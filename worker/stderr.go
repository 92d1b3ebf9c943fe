package worker

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// tracebackStart is the first line of a Python traceback on stderr.
const tracebackStart = "Traceback (most recent call last):"

// maxGroupLines bounds the lines of one traceback logged as one entry: a
// longer one is logged in parts.
const maxGroupLines = 200

// stderrGroups turns a process's stderr lines into log entries: a line is
// an entry, except a Python traceback, which is one entry from its
// "Traceback (most recent call last):" to its exception line (the first
// line after it that is not indented). Not safe for concurrent use.
type stderrGroups struct {
	lines []string
	size  int
	max   int // the longest entry, in bytes
}

// add takes the next line and returns the entry it completes, if any.
func (g *stderrGroups) add(line string) (string, bool) {
	if len(g.lines) == 0 {
		if line == tracebackStart {
			g.lines, g.size = append(g.lines, line), len(line)
			return "", false
		}
		return line, line != ""
	}
	g.lines = append(g.lines, line)
	g.size += len(line) + 1
	indented := strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")
	if (line != "" && !indented) || len(g.lines) >= maxGroupLines || g.size >= g.max {
		return g.flush()
	}
	return "", false
}

// flush returns the traceback held so far, if any: at the end of the
// stream, a traceback that never got its exception line.
func (g *stderrGroups) flush() (string, bool) {
	if len(g.lines) == 0 {
		return "", false
	}
	entry := strings.Join(g.lines, "\n")
	g.lines, g.size = g.lines[:0], 0
	return entry, true
}

// stderrTail keeps the last lines a process wrote to stderr, for the
// error that says why it could not start.
type stderrTail struct {
	mu    sync.Mutex
	lines []string
}

const (
	tailLines   = 12
	tailLineLen = 400
)

func (t *stderrTail) add(line string) {
	if line == "" {
		return
	}
	if len(line) > tailLineLen {
		line = line[:tailLineLen] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, line)
}

func (t *stderrTail) get() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

// StartError says why a worker process ended before its hello: the
// program that ran (its path as found on PATH), how it ended, the last
// lines of its stderr, and what to try.
type StartError struct {
	Command []string // as configured
	Path    string   // the program's path, as found on PATH
	Dir     string   // its working directory; "" for pnp's own
	Err     error    // how it ended (an exit status)
	Stderr  []string // its last stderr lines, oldest first
	Hint    string   // what to try
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker process %s ended before its hello (%v)", e.Path, e.Err)
	if e.Dir != "" {
		fmt.Fprintf(&b, " in %s", e.Dir)
	}
	if len(e.Stderr) > 0 {
		fmt.Fprintf(&b, "; last stderr: %s", strings.Join(e.Stderr, " | "))
	} else {
		b.WriteString("; it wrote nothing to stderr")
	}
	if e.Hint != "" {
		b.WriteString("; try: ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

func (e *StartError) Unwrap() error { return e.Err }

var (
	missingModule = regexp.MustCompile(`(?:ModuleNotFoundError|ImportError): No module named '([^']+)'`)
	missingFile   = regexp.MustCompile(`can't open file '([^']+)'|No such file or directory: '([^']+)'`)
)

// startError builds the StartError of a process of cfg that ended with
// err after writing stderr.
func startError(cfg Config, err error, stderr []string) *StartError {
	e := &StartError{Command: cfg.Command, Path: cfg.Command[0], Dir: cfg.Dir, Err: err, Stderr: stderr}
	if p, lerr := exec.LookPath(cfg.Command[0]); lerr == nil {
		if abs, aerr := filepath.Abs(p); aerr == nil {
			p = abs
		}
		e.Path = p
	}
	all := strings.Join(stderr, "\n")
	where := "pnp's working directory"
	if cfg.Dir != "" {
		where = cfg.Dir
	}
	switch {
	case missingModule.MatchString(all):
		mod := missingModule.FindStringSubmatch(all)[1]
		e.Hint = fmt.Sprintf("%s cannot import %q: install it for that interpreter, or name one that has it in --worker "+
			"(Debian's python3-* packages are seen by /usr/bin/python3, not by a pyenv or virtualenv python3 earlier on PATH)", e.Path, mod)
	case missingFile.MatchString(all):
		m := missingFile.FindStringSubmatch(all)
		name := m[1]
		if name == "" {
			name = m[2]
		}
		e.Hint = fmt.Sprintf("%q does not exist from %s: give --worker an absolute path, or set --worker-dir to the directory the adapter's paths start from", name, where)
	case strings.Contains(all, "SyntaxError"):
		e.Hint = fmt.Sprintf("the adapter does not parse under %s: is it the Python version the adapter was written for?", e.Path)
	case strings.Contains(all, "nothing to serve"):
		e.Hint = "define at least one function named run_<algorithm> (lower case letters, digits and _) in the adapter"
	default:
		e.Hint = fmt.Sprintf("run %q by hand from %s to see why it stops", strings.Join(cfg.Command, " "), where)
	}
	return e
}
