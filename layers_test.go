package pnpworker_test

// The house is layered (docs/ARCHITECTURE.md, "Layout"): internal/ is the
// ground floor and imports none of the system's parts; protocol, the wire
// protocol's vocabulary, imports nothing of the module but schemas, so
// every part can speak it; runner is the server library, imported by what
// serves algorithms (cmd/, worker/, algo/, harness/) and by no client;
// harness/ drives the whole system from above and nothing but cmd/pnp
// imports it; the gateway is a client of the job pipeline, so it uses
// jobs, the jobs client, and never controller, the dispatcher; jobs and
// replycheck (the reply check the dispatcher and the gateway share) sit
// below both and import neither, nor the runner. These tests hold the rules over every Go file of the module,
// test files and files behind build tags (the chaos soak, platform files)
// included, so a rule cannot be broken in a file that one build does not
// see. Only the runner rule spares test files: a client's test may start
// real runners to talk to; likewise a test of the gateway, jobs or
// replycheck may start a real controller. Only commands (cmd/, package
// main) import flag: libraries receive values.

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// module is the module path of go.mod.
const module = "github.com/pnpworker/pnpworker"

// edge is one import between two packages of the module, both named by
// their directory relative to the module root ("internal/imagefetch",
// "runner").
type edge struct {
	from, to string
}

// layerExceptions are the imports that break a rule today, each with what
// removes it. An exception that is no longer used fails TestLayers, so the
// list only shrinks.
var layerExceptions = map[edge]string{}

// groundFloor reports whether a package under internal/ may import the
// package in dir: another ground-floor package; schemas, the JSON Schema
// files, which import nothing of the module; or protocol, which imports
// nothing but schemas (TestLayers holds both).
func groundFloor(dir string) bool {
	return under(dir, "internal") || dir == "schemas" || dir == "protocol"
}

// servesAlgorithms reports whether the package in dir serves algorithms
// and so may import runner, the server library, in its non-test files:
// the commands, the worker host, the algorithms, the harnesses.
func servesAlgorithms(dir string) bool {
	return under(dir, "cmd") || under(dir, "worker") || under(dir, "algo") || under(dir, "harness") || dir == "runner"
}

// under reports whether dir is top or a directory below it.
func under(dir, top string) bool {
	return dir == top || strings.HasPrefix(dir, top+"/")
}

// layerRule returns why the import e, made by a test file when test is
// true, breaks the layering, or "".
func layerRule(e edge, test bool) string {
	switch {
	case under(e.from, "internal") && !groundFloor(e.to):
		return "internal/ is the ground floor: it imports none of the system's parts"
	case e.from == "schemas" && e.to != "schemas":
		return "schemas is imported by internal/ and imports nothing of the module"
	case e.from == "protocol" && e.to != "protocol" && e.to != "schemas":
		return "protocol is the vocabulary every part speaks: it imports nothing of the module but schemas"
	case e.to == "runner" && !test && !servesAlgorithms(e.from):
		return "runner is the server library: clients speak the protocol package, only cmd/, worker/, algo/ and harness/ serve algorithms"
	case e.from == "gateway" && e.to == "controller" && !test:
		return "the gateway is a client of the job pipeline: it uses jobs, the jobs client, not controller, the dispatcher"
	case (e.from == "jobs" || e.from == "replycheck") && (e.to == "gateway" || (!test && (e.to == "controller" || e.to == "runner"))):
		return "jobs and replycheck sit below the dispatcher and the gateway, which import them: they import neither, nor the runner"
	case under(e.to, "harness") && !under(e.from, "harness") && e.from != "cmd/pnp":
		return "harness/ drives the whole system from above: nothing but cmd/pnp imports it"
	}
	return ""
}

// flagRule is why a library may not import flag: only the commands
// (cmd/, and the package main of a generator) read flags and env, and
// libraries receive values (shared/STYLE.md). Test files may: go test
// flags are theirs.
const flagRule = "only commands (cmd/, package main) read flags; libraries receive values"

// layerViolations reads the imports of every Go file under root (a module
// whose path is module) and returns the imports that break a rule and are
// not in exceptions, one line each, and the exceptions no file needs any
// more. Directories the go tool ignores (testdata, names starting with '.'
// or '_') are skipped; build constraints are not applied.
func layerViolations(root string, exceptions map[edge]string) (violations []string, unused []edge, err error) {
	used := make(map[edge]bool)
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return fmt.Errorf("parse %s: %w", rel, err)
		}
		for _, spec := range f.Imports {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: import %s: %w", rel, spec.Path.Value, err)
			}
			if imp == "flag" && !strings.HasSuffix(name, "_test.go") && f.Name.Name != "main" && !under(path.Dir(rel), "cmd") {
				violations = append(violations, fmt.Sprintf("%s imports flag: %s", rel, flagRule))
				continue
			}
			if imp != module && !strings.HasPrefix(imp, module+"/") {
				continue
			}
			e := edge{from: path.Dir(rel), to: strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")}
			why := layerRule(e, strings.HasSuffix(name, "_test.go"))
			if why == "" {
				continue
			}
			if _, ok := exceptions[e]; ok {
				used[e] = true
				continue
			}
			violations = append(violations, fmt.Sprintf("%s imports %s: %s", rel, imp, why))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for e := range exceptions {
		if !used[e] {
			unused = append(unused, e)
		}
	}
	slices.SortFunc(unused, func(a, b edge) int { return strings.Compare(a.from+" "+a.to, b.from+" "+b.to) })
	return violations, unused, nil
}

func TestLayers(t *testing.T) {
	violations, unused, err := layerViolations(".", layerExceptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range violations {
		t.Error(v)
	}
	for _, e := range unused {
		t.Errorf("the exception %s -> %s is no longer needed: remove it from layerExceptions", e.from, e.to)
	}
}

// The check must catch what it is for: an import that climbs out of
// internal/, a product package that imports a harness, an exception left
// behind; and it must not be blinded by a build tag or a test file.
func TestLayersCatchViolations(t *testing.T) {
	type file struct{ path, src string }
	exceptions := map[edge]string{{"internal/fetch", "runner"}: "for the test"}
	cases := []struct {
		name       string
		files      []file
		violations int
		unused     int
	}{
		{
			name: "ground floor imports ground floor and schemas",
			files: []file{
				{"internal/a/a.go", `package a; import (_ "github.com/pnpworker/pnpworker/internal/b"; _ "github.com/pnpworker/pnpworker/schemas"; _ "fmt")`},
				{"internal/fetch/f.go", `package fetch; import _ "github.com/pnpworker/pnpworker/runner"`},
			},
		},
		{
			name:       "ground floor imports runner",
			files:      []file{{"internal/a/a.go", `package a; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "ground floor imports an algorithm from a test file",
			files:      []file{{"internal/a/a_test.go", `package a_test; import _ "github.com/pnpworker/pnpworker/algo/image_info"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "ground floor imports a harness behind a build tag",
			files:      []file{{"internal/a/soak.go", "//go:build soak\n\npackage a\n\nimport _ \"github.com/pnpworker/pnpworker/harness/chaos\"\n"}},
			violations: 1, unused: 1,
		},
		{
			name:       "exception used outside its package",
			files:      []file{{"internal/fetch/sub/s.go", `package sub; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "a library reads flags",
			files:      []file{{"jobs/store.go", `package jobs; import _ "flag"`}},
			violations: 1, unused: 1,
		},
		{
			name: "commands and tests read flags",
			files: []file{
				{"cmd/pnp/flags.go", `package main; import _ "flag"`},
				{"algo/a/gen/main.go", `package main; import _ "flag"`},
				{"controller/bench_test.go", `package controller; import _ "flag"`},
			},
			unused: 1,
		},
		{
			name:       "schemas imports the runner",
			files:      []file{{"schemas/s.go", `package schemas; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "product package imports a harness",
			files:      []file{{"controller/c.go", `package controller; import _ "github.com/pnpworker/pnpworker/harness/bench"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "client imports the runner",
			files:      []file{{"gateway/api.go", `package gateway; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "client imports the runner behind a build tag",
			files:      []file{{"controller/soak.go", "//go:build soak\n\npackage controller\n\nimport _ \"github.com/pnpworker/pnpworker/runner\"\n"}},
			violations: 1, unused: 1,
		},
		{
			name: "client tests start runners, servers import the runner",
			files: []file{
				{"controller/c_test.go", `package controller_test; import _ "github.com/pnpworker/pnpworker/runner"`},
				{"cmd/pnp/runner.go", `package main; import _ "github.com/pnpworker/pnpworker/runner"`},
				{"worker/w.go", `package worker; import _ "github.com/pnpworker/pnpworker/runner"`},
				{"algo/a/a.go", `package a; import _ "github.com/pnpworker/pnpworker/runner"`},
				{"harness/bench/b.go", `package bench; import _ "github.com/pnpworker/pnpworker/runner"`},
			},
			unused: 1,
		},
		{
			name: "everyone speaks the protocol, which imports schemas",
			files: []file{
				{"internal/a/a.go", `package a; import _ "github.com/pnpworker/pnpworker/protocol"`},
				{"controller/c.go", `package controller; import _ "github.com/pnpworker/pnpworker/protocol"`},
				{"protocol/p.go", `package protocol; import (_ "github.com/pnpworker/pnpworker/schemas"; _ "github.com/nats-io/nats.go")`},
			},
			unused: 1,
		},
		{
			name:       "protocol imports discovery",
			files:      []file{{"protocol/p.go", `package protocol; import _ "github.com/pnpworker/pnpworker/discovery"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "protocol test imports the runner",
			files:      []file{{"protocol/p_test.go", `package protocol_test; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "gateway imports the dispatcher",
			files:      []file{{"gateway/api.go", `package gateway; import _ "github.com/pnpworker/pnpworker/controller"`}},
			violations: 1, unused: 1,
		},
		{
			name: "gateway uses the jobs client; its tests start a controller",
			files: []file{
				{"gateway/api.go", `package gateway; import (_ "github.com/pnpworker/pnpworker/jobs"; _ "github.com/pnpworker/pnpworker/replycheck")`},
				{"gateway/g_test.go", `package gateway_test; import _ "github.com/pnpworker/pnpworker/controller"`},
				{"controller/c.go", `package controller; import (_ "github.com/pnpworker/pnpworker/jobs"; _ "github.com/pnpworker/pnpworker/replycheck")`},
				{"cmd/pnp/jobs.go", `package main; import (_ "github.com/pnpworker/pnpworker/controller"; _ "github.com/pnpworker/pnpworker/jobs")`},
			},
			unused: 1,
		},
		{
			name:       "jobs imports the dispatcher",
			files:      []file{{"jobs/store.go", `package jobs; import _ "github.com/pnpworker/pnpworker/controller"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "jobs test imports the gateway",
			files:      []file{{"jobs/j_test.go", `package jobs_test; import _ "github.com/pnpworker/pnpworker/gateway"`}},
			violations: 1, unused: 1,
		},
		{
			name:       "replycheck imports the dispatcher behind a build tag",
			files:      []file{{"replycheck/soak.go", "//go:build soak\n\npackage replycheck\n\nimport _ \"github.com/pnpworker/pnpworker/controller\"\n"}},
			violations: 1, unused: 1,
		},
		{
			name:       "jobs imports the runner",
			files:      []file{{"jobs/store.go", `package jobs; import _ "github.com/pnpworker/pnpworker/runner"`}},
			violations: 1, unused: 1,
		},
		{
			name: "cmd/pnp and harnesses import harnesses",
			files: []file{
				{"cmd/pnp/chaos.go", `package main; import _ "github.com/pnpworker/pnpworker/harness/chaos"`},
				{"harness/chaos/chaos_test.go", `package chaos_test; import _ "github.com/pnpworker/pnpworker/harness/chaos"`},
				{"harness/chaos/h.go", `package chaos; import (_ "github.com/pnpworker/pnpworker/controller"; _ "github.com/pnpworker/pnpworker/internal/embedded")`},
			},
			unused: 1,
		},
		{
			name: "directories the go tool ignores",
			files: []file{
				{"internal/a/testdata/x.go", `package x; import _ "github.com/pnpworker/pnpworker/runner"`},
				{"internal/a/_old/x.go", `package x; import _ "github.com/pnpworker/pnpworker/runner"`},
			},
			unused: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(root, filepath.FromSlash(f.path))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f.src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			violations, unused, err := layerViolations(root, exceptions)
			if err != nil {
				t.Fatal(err)
			}
			if len(violations) != tc.violations || len(unused) != tc.unused {
				t.Fatalf("got %d violations %q and %d unused exceptions %v, want %d and %d",
					len(violations), violations, len(unused), unused, tc.violations, tc.unused)
			}
			for _, v := range violations {
				t.Log(v)
			}
		})
	}
}
