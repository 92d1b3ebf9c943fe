package main

import (
	"bufio"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The documented-commands check. Every command line in the project's
// documentation (README.md, docs/*.md, algo/*/README.md, Taskfile.yml) that
// starts with pnp, go run ./cmd/pnp, go test, go tool pprof, go generate,
// go run or go build is checked against the code, cheaply and without a
// network or a NATS server:
//
//   - pnp: the subcommand (and its sub-subcommand) exists, and every flag
//     the line uses is one its --help lists (the real flag sets, run
//     in-process);
//   - go test: the packages exist; -run and -bench match at least one
//     test or benchmark function of those packages (the first element of
//     the pattern, before any '/'); flags that are not go test's own are
//     defined with the flag package in the packages' test files;
//   - go tool pprof: a -list/-peek/-focus/... pattern that names one of our
//     packages matches a function or method of it;
//   - go generate, go run, go build: the package exists (and has a
//     //go:generate line, for go generate).
//
//   - nats (the stock CLI, when installed; CI installs it): the command
//     exists and its flags are in its --help.
//
// What it cannot check (output, timings, docker) it skips.

// docFiles are the files whose commands are checked, relative to the
// repository root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"README.md", "docs/*.md", "algo/*/README.md", "Taskfile.yml"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	return files
}

// docCommand is one command found in a document.
type docCommand struct {
	where string // file:line
	args  []string
}

var (
	// inlineCode is a `code span` in prose.
	inlineCode = regexp.MustCompile("`([^`]+)`")
	// templateVar is a Taskfile template ({{.CLI_ARGS}}).
	templateVar = regexp.MustCompile(`\{\{[^}]*\}\}`)
)

// extractCommands returns the command lines of a Markdown file (inside
// fenced blocks, and inline code spans in prose) or a Taskfile (its cmds).
func extractCommands(t *testing.T, path, root string) []docCommand {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rel, _ := filepath.Rel(root, path)
	var out []docCommand
	add := func(line int, text string) {
		if strings.ContainsAny(text, "─│┌└├►▼▲◄") {
			return // a diagram, not a command
		}
		for _, cmd := range splitCommands(text) {
			if isCheckedCommand(cmd) {
				out = append(out, docCommand{where: fmt.Sprintf("%s:%d", rel, line), args: cmd})
			}
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	fenced, taskfile := false, strings.HasSuffix(path, ".yml")
	pending, pendingLine := "", 0
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if taskfile {
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
				add(n, templateVar.ReplaceAllString(s, ""))
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
				add(n, m[1])
			}
			continue
		}
		text := strings.TrimPrefix(strings.TrimSpace(line), "$ ")
		if pending != "" {
			text, n = pending+" "+text, pendingLine
			pending = ""
		}
		if s, ok := strings.CutSuffix(text, `\`); ok {
			pending, pendingLine = s, n
			continue
		}
		add(n, text)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// isCheckedCommand says whether args is a command this check understands.
func isCheckedCommand(args []string) bool {
	if len(args) < 2 {
		return false
	}
	switch args[0] {
	case "pnp", "nats":
		return true
	case "go":
		return slices.Contains([]string{"run", "test", "generate", "build", "tool"}, args[1])
	}
	return false
}

// splitCommands splits a shell line into commands (at &&, ||, ;, |) and
// each command into words, honouring quotes and dropping a trailing
// comment. Leading VAR=value assignments are dropped.
func splitCommands(line string) [][]string {
	var cmds [][]string
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	flushWord := func() {
		if inWord {
			words = append(words, w.String())
		}
		w.Reset()
		inWord = false
	}
	flushCmd := func() {
		flushWord()
		for len(words) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0]) {
			words = words[1:]
		}
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
		words = nil
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			flushCmd()
			return cmds
		case r == ' ' || r == '\t':
			flushWord()
		case r == ';' || r == '|' || r == '&':
			flushCmd()
			for i+1 < len(rs) && (rs[i+1] == '|' || rs[i+1] == '&') {
				i++
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	flushCmd()
	return cmds
}

// TestDocumentedCommands checks every documented command against the code
// (see the comment at the top of this file).
func TestDocumentedCommands(t *testing.T) {
	isolateEnv(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := newPackageIndex(t, root)
	pkgs.nats = natsCLI(t)
	checked := 0
	for _, file := range docFiles(t, root) {
		for _, c := range extractCommands(t, file, root) {
			err := pkgs.check(c.args)
			checked++
			if testing.Verbose() {
				t.Logf("%s: %s", c.where, strings.Join(c.args, " "))
			}
			if err != nil {
				t.Errorf("%s: %s: %v", c.where, strings.Join(c.args, " "), err)
			}
		}
	}
	t.Logf("%d documented commands checked (go test -v lists them)", checked)
	if checked < 40 {
		t.Errorf("only %d documented commands found: is the extraction broken?", checked)
	}
}

// check checks one command (isCheckedCommand(args) is true).
func (ix *packageIndex) check(args []string) error {
	switch {
	case args[0] == "nats":
		return ix.checkNats(args[1:])
	case args[0] == "pnp":
		return checkPnp(args[1:])
	case args[1] == "run" && len(args) > 2 && args[2] == "./cmd/pnp":
		return checkPnp(args[3:])
	case args[1] == "test":
		return ix.checkGoTest(args[2:])
	case args[1] == "tool":
		return ix.checkPprof(args[2:])
	default: // go run, build, generate
		return ix.checkGoPackages(args[1], args[2:])
	}
}

// pnpWithSubcommands are the commands whose first argument is a
// subcommand with its own flags.
var pnpWithSubcommands = map[string][]string{
	"discovery":  {"provision", "ls", "watch"},
	"dead":       {"ls", "replay"},
	"jobs":       {"ls", "purge"},
	"route":      {"set", "show", "promote", "clear", "report"},
	"schedule":   {"add", "ls", "rm"},
	"algorithms": {"declare"},
}

// checkPnp checks a pnp command line: the command exists and its flags
// are those its --help lists.
func checkPnp(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return checkFlags(nil, args)
	}
	if alts := strings.Split(args[0], "/"); len(alts) > 1 {
		// prose shorthand: "pnp submit/result" names both commands
		for _, a := range alts {
			if err := checkPnp(append([]string{a}, args[1:]...)); err != nil {
				return err
			}
		}
		return nil
	}
	cmd := args[:1]
	rest := args[1:]
	if subs, ok := pnpWithSubcommands[args[0]]; ok && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		if !slices.Contains(subs, rest[0]) {
			return fmt.Errorf("pnp %s has no subcommand %q (%v)", args[0], rest[0], subs)
		}
		cmd, rest = args[:2], rest[1:]
	}
	return checkFlags(cmd, rest)
}

// checkFlags runs `pnp <cmd> --help` in-process and checks that every flag
// in args is listed.
func checkFlags(cmd, args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	code := run(ctx, append(slices.Clone(cmd), "--help"), &out, &out)
	if code != 0 {
		return fmt.Errorf("pnp %s --help: exit %d: %s", strings.Join(cmd, " "), code, out.String())
	}
	known := map[string]bool{"help": true, "h": true}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(out.String(), -1) {
		known[m[1]] = true
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, ok := flagName(a)
		if ok && !known[name] {
			return fmt.Errorf("flag %s is not in pnp %s --help", a, strings.Join(cmd, " "))
		}
	}
	return nil
}

// flagName returns the name of a -flag or --flag[=value] argument.
func flagName(a string) (string, bool) {
	if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	if name == "" || !regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.-]*$`).MatchString(name) {
		return "", false
	}
	return name, true
}

// packageIndex knows the module's packages: their test functions, the
// flags their tests define, their functions and methods (as pprof names
// them), and whether they have a //go:generate line.
type packageIndex struct {
	root     string
	module   string
	tests    map[string][]string // dir -> Test/Example/Fuzz/Benchmark names
	flags    map[string][]string // dir -> flag names defined in test files
	symbols  map[string][]string // dir -> pprof symbol names
	generate map[string]bool
	// nats is the stock nats CLI; "" skips nats commands.
	nats       string
	natsValued map[string]bool
}

// natsCLI returns the nats CLI the documented nats commands are checked
// with: $NATS_CLI, else nats on PATH. Without one the nats commands are
// skipped, except under CI (CI set), where that fails.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NATS_CLI"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is not installed (set NATS_CLI or put nats on PATH)")
	}
	t.Log("nats CLI not found: documented nats commands are not checked")
	return ""
}

// natsValueFlags returns the nats CLI's global flags that take a value
// (shown as --server=URL, -s, --server=URL in its help).
func (ix *packageIndex) natsValueFlags() map[string]bool {
	if ix.natsValued != nil {
		return ix.natsValued
	}
	ix.natsValued = map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, ix.nats, "--help").CombinedOutput()
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-([a-zA-Z]), )?--([a-z0-9-]+)=`).FindAllStringSubmatch(string(out), -1) {
		if m[1] != "" {
			ix.natsValued[m[1]] = true
		}
		ix.natsValued[m[2]] = true
	}
	return ix.natsValued
}

// checkNats checks a nats CLI command line: the command exists (its
// --help exits 0) and every flag the line uses is one its help lists.
func (ix *packageIndex) checkNats(args []string) error {
	if ix.nats == "" {
		return nil
	}
	// The command words, after any global flags (nats -s URL --user u kv ls).
	valued := ix.natsValueFlags()
	var words []string
	for i := 0; i < len(args) && len(words) < 2; i++ {
		name, isFlag := flagName(args[i])
		if !isFlag {
			words = append(words, args[i])
			continue
		}
		if len(words) > 0 {
			break
		}
		if valued[name] && !strings.Contains(args[i], "=") {
			i++ // its value
		}
	}
	var help string
	for k := len(words); k >= 0; k-- {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, ix.nats, append(slices.Clone(words[:k]), "--help")...).CombinedOutput()
		cancel()
		if err == nil {
			help = string(out)
			break
		}
		if k == 0 {
			return fmt.Errorf("nats --help: %v: %s", err, out)
		}
	}
	if len(words) > 0 && !strings.Contains(help, "usage: nats "+words[0]) && !regexp.MustCompile(`(?m)^usage: nats [a-z]`).MatchString(help) {
		return fmt.Errorf("no nats command %q", words[0])
	}
	long, short := map[string]bool{"help": true}, map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-([a-zA-Z]), )?--(?:\[no-\])?([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(help, -1) {
		if m[1] != "" {
			short[m[1]] = true
		}
		long[m[2]] = true
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, ok := flagName(a)
		switch {
		case !ok:
		case strings.HasPrefix(a, "--"):
			if !long[name] && !long[strings.TrimPrefix(name, "no-")] {
				return fmt.Errorf("flag %s is not in nats %s --help", a, strings.Join(words, " "))
			}
		default:
			for _, c := range name { // -rH: combined short flags
				if !short[string(c)] {
					return fmt.Errorf("flag %s is not in nats %s --help", a, strings.Join(words, " "))
				}
				break // the rest may be the value (-Hk:v)
			}
		}
	}
	return nil
}

func newPackageIndex(t *testing.T, root string) *packageIndex {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	ix := &packageIndex{root: root, module: string(m[1]), tests: map[string][]string{},
		flags: map[string][]string{}, symbols: map[string][]string{}, generate: map[string]bool{}}
	flagDef := regexp.MustCompile(`flag\.[A-Za-z]+(?:Var)?\((?:&?[A-Za-z_.]+, )?"([a-zA-Z0-9_.-]+)"`)
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		dir := filepath.ToSlash(rel)
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if strings.Contains(string(src), "\n//go:generate ") {
			ix.generate[dir] = true
		}
		importPath := ix.module
		if dir != "." {
			importPath += "/" + dir
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			if strings.HasSuffix(p, "_test.go") {
				if fn.Recv == nil {
					ix.tests[dir] = append(ix.tests[dir], fn.Name.Name)
				}
				continue
			}
			name := importPath + "." + fn.Name.Name
			if fn.Recv != nil && len(fn.Recv.List) == 1 {
				name = importPath + "." + recvName(fn.Recv.List[0].Type) + "." + fn.Name.Name
			}
			ix.symbols[dir] = append(ix.symbols[dir], name)
		}
		if strings.HasSuffix(p, "_test.go") {
			for _, m := range flagDef.FindAllStringSubmatch(string(src), -1) {
				ix.flags[dir] = append(ix.flags[dir], m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// recvName renders a receiver type as pprof does: T or (*T).
func recvName(e ast.Expr) string {
	if ix, ok := e.(*ast.IndexExpr); ok { // generic receiver T[P]
		e = ix.X
	}
	if ix, ok := e.(*ast.IndexListExpr); ok {
		e = ix.X
	}
	switch x := e.(type) {
	case *ast.StarExpr:
		return "(*" + recvName(x.X) + ")"
	case *ast.Ident:
		return x.Name
	}
	return "?"
}

// dirs resolves package arguments (./x, ./x/..., ./...) to directories of
// the index, or returns an error naming the first that does not exist.
func (ix *packageIndex) dirs(pkgs []string) ([]string, error) {
	var out []string
	for _, p := range pkgs {
		p = strings.TrimSuffix(strings.TrimPrefix(p, "./"), "/")
		if p == "..." || p == "." {
			for d := range ix.tests {
				out = append(out, d)
			}
			for d := range ix.symbols {
				out = append(out, d)
			}
			continue
		}
		if base, ok := strings.CutSuffix(p, "/..."); ok {
			found := false
			for _, m := range []map[string][]string{ix.tests, ix.symbols} {
				for d := range m {
					if d == base || strings.HasPrefix(d, base+"/") {
						out, found = append(out, d), true
					}
				}
			}
			if !found {
				return nil, fmt.Errorf("no package under ./%s", base)
			}
			continue
		}
		if _, ok := ix.tests[p]; !ok {
			if _, ok := ix.symbols[p]; !ok {
				return nil, fmt.Errorf("no package ./%s", p)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// goTestFlags are go test's and the testing package's own flags; the value
// says whether the flag takes a value.
var goTestFlags = map[string]bool{
	"run": true, "bench": true, "benchtime": true, "count": true, "cpu": true, "timeout": true,
	"tags": true, "cpuprofile": true, "memprofile": true, "blockprofile": true, "mutexprofile": true,
	"trace": true, "coverprofile": true, "o": true, "p": true, "parallel": true, "fuzz": true,
	"fuzztime": true, "shuffle": true, "list": true, "skip": true, "exec": true, "covermode": true,
	"v": false, "race": false, "short": false, "json": false, "failfast": false, "benchmem": false,
	"cover": false, "c": false, "x": false, "n": false, "trimpath": false,
}

// checkGoTest checks a go test command line.
func (ix *packageIndex) checkGoTest(args []string) error {
	var pkgs, custom []string
	patterns := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, isFlag := flagName(a)
		switch {
		case !isFlag:
			if strings.HasPrefix(a, "./") || a == "." {
				pkgs = append(pkgs, a)
			}
		case goTestFlags[name]:
			val := ""
			if _, v, ok := strings.Cut(a, "="); ok {
				val = v
			} else if i+1 < len(args) {
				i++
				val = args[i]
			}
			if name == "run" || name == "bench" {
				patterns[name] = val
			}
		case !goTestFlags[name]:
			if _, known := goTestFlags[name]; !known {
				custom = append(custom, name)
				if !strings.Contains(a, "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
					i++ // its value
				}
			}
		}
	}
	if len(pkgs) == 0 {
		return nil // a package list in a variable, or none
	}
	dirs, err := ix.dirs(pkgs)
	if err != nil {
		return err
	}
	var names, flags []string
	for _, d := range dirs {
		names = append(names, ix.tests[d]...)
		flags = append(flags, ix.flags[d]...)
	}
	for kind, pat := range patterns {
		first, _, _ := strings.Cut(pat, "/")
		if first == "^$" || first == "" {
			continue
		}
		re, err := regexp.Compile(first)
		if err != nil {
			return fmt.Errorf("-%s %q: %v", kind, pat, err)
		}
		prefixes := []string{"Test", "Example", "Fuzz"}
		if kind == "bench" {
			prefixes = []string{"Benchmark"}
		}
		if !slices.ContainsFunc(names, func(n string) bool {
			return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(n, p) }) && re.MatchString(n)
		}) {
			return fmt.Errorf("-%s %q matches no %s function in %v", kind, pat, strings.Join(prefixes, "/"), pkgs)
		}
	}
	for _, f := range custom {
		if !slices.Contains(flags, f) {
			return fmt.Errorf("flag -%s is neither go test's nor defined by the tests of %v", f, pkgs)
		}
	}
	return nil
}

// checkPprof checks the symbol patterns of a go tool pprof command line
// that name one of our packages.
func (ix *packageIndex) checkPprof(args []string) error {
	if len(args) == 0 || args[0] != "pprof" {
		return nil
	}
	for i := 1; i+1 < len(args); i++ {
		name, ok := flagName(args[i])
		if !ok || !slices.Contains([]string{"list", "peek", "focus", "show", "hide", "ignore", "tagfocus", "disasm", "weblist"}, name) {
			continue
		}
		pat := args[i+1]
		dir := ""
		for d := range ix.symbols {
			base := filepath.Base(d)
			if strings.HasPrefix(pat, base+".") || strings.HasPrefix(pat, "/"+d+".") || strings.HasPrefix(pat, ix.module+"/"+d+".") {
				dir = d
			}
		}
		if dir == "" {
			continue // a runtime or library symbol
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			return fmt.Errorf("-%s %q: %v", name, pat, err)
		}
		if !slices.ContainsFunc(ix.symbols[dir], re.MatchString) {
			return fmt.Errorf("-%s %q matches no function or method of ./%s", name, pat, dir)
		}
	}
	return nil
}

// checkGoPackages checks go run, go build and go generate arguments: the
// packages exist, and go generate has something to run.
func (ix *packageIndex) checkGoPackages(verb string, args []string) error {
	var pkgs []string
	for _, a := range args {
		if strings.HasPrefix(a, "./") {
			pkgs = append(pkgs, a)
			if verb == "run" {
				break // the rest are the program's arguments
			}
		}
	}
	if len(pkgs) == 0 {
		return nil // a mention in prose (`go generate`), or a package list in a variable
	}
	dirs, err := ix.dirs(pkgs)
	if err != nil {
		return err
	}
	if verb == "generate" && !slices.ContainsFunc(dirs, func(d string) bool { return ix.generate[d] }) {
		return fmt.Errorf("no //go:generate line in %v", pkgs)
	}
	return nil
}

// The check must catch what it is for: a stale pprof symbol, a renamed
// flag, a test pattern that matches nothing.
func TestDocumentedCommandsCatchRot(t *testing.T) {
	isolateEnv(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ix := newPackageIndex(t, root)
	ix.nats = natsCLI(t)
	cases := []struct {
		name string
		line string
	}{
		{"stale pprof symbol", `go tool pprof -list 'runner.\(\*endpoint\).nosuchmethod$' runner.pprof`},
		{"unknown pnp flag", `go run ./cmd/pnp submit --no-such-flag language_detection '{}'`},
		{"unknown pnp command", `pnp nosuchcommand`},
		{"unknown pnp subcommand", `pnp dead nosuch`},
		{"test pattern matching nothing", `go test -run 'TestNoSuchThing' ./controller/`},
		{"bench pattern matching nothing", `go test -run '^$' -bench NoSuchBench ./controller/`},
		{"missing package", `go test ./nosuchpackage/`},
		{"unknown test flag", `go test -bench ControllerVsHandwritten ./controller/ -nosuchflag 3`},
		{"go generate without a directive", `go generate ./controller`},
		{"unknown nats flag", `nats kv get results job-1 --no-such-flag`},
		{"unknown nats command", `nats nosuchcommand x`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.line, "nats ") && ix.nats == "" {
				t.Skip("no nats CLI")
			}
			cmds := splitCommands(tc.line)
			if len(cmds) != 1 || !isCheckedCommand(cmds[0]) {
				t.Fatalf("not parsed as a checked command: %q", cmds)
			}
			err := ix.check(cmds[0])
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}
