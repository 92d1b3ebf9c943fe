package pnpworker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/format"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
)

// The Go code of the docs compiles, and what README.md promises a Go
// author holds: an algorithm in its own module builds and serves, and an
// algorithm added to this repository takes one line in cmd/pnp/builtin.go.
//
// Every ```go block of a Markdown file of the repository (README.md,
// docs/*.md, algo/*/README.md, ...) is a whole Go file, gofmt'd, built with
// `go build` and `go vet` in one module, example.com/wordcount (README's
// "A Go algorithm in its own repository"), made as README says: go mod
// init, go mod edit -require/-replace to this checkout, go mod tidy. The
// fence's info string says where the file goes:
//
//	```go              a package of its own, in a directory of its own
//	```go PATH.go      the file PATH of the module (README: wordcount.go, cmd/wordcount/main.go)
//	```go fragment     a piece of a file (a statement, a list entry): not compiled
//
// Fragments are for what cannot stand alone; use them sparingly. The
// builds use the module cache (GOFLAGS=-mod=mod, GOPROXY as set, this
// module's go.sum), so they run offline once `go mod download` has run.
func TestGoInDocs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds modules")
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	mod := modulePath(t, root)
	blocks := goBlocks(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	modDir := filepath.Join(dir, "wordcount")
	bin := filepath.Join(dir, "bin")

	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	edit := []string{"go", "mod", "edit", "-require", mod + "@v0.0.0", "-replace", mod + "=" + root}
	if shown := "go mod edit -require " + mod + "@v0.0.0 -replace " + mod + "="; !bytes.Contains(readme, []byte(shown)) {
		t.Fatalf("README.md does not show %q…, the command that makes a module require this one", shown)
	}

	t.Run("compile", func(t *testing.T) {
		if err := os.MkdirAll(modDir, 0o755); err != nil {
			t.Fatal(err)
		}
		goCmd(ctx, t, modDir, true, "mod", "init", "example.com/wordcount")
		goCmd(ctx, t, modDir, true, edit[1:]...)
		// This module's checksums, so that nothing is looked up.
		sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(modDir, "go.sum"), sum)
		for _, b := range blocks {
			if b.fragment {
				continue
			}
			if formatted, err := format.Source(b.code); err != nil {
				t.Errorf("%s: %v", b.where, err)
			} else if !bytes.Equal(formatted, b.code) {
				t.Errorf("%s: not gofmt'd", b.where)
			}
			writeFile(t, filepath.Join(modDir, filepath.FromSlash(b.path)), b.code)
		}
		goCmd(ctx, t, modDir, true, "mod", "tidy")
		goCmd(ctx, t, modDir, true, "build", "./...")
		goCmd(ctx, t, modDir, true, "vet", "./...")
		goCmd(ctx, t, modDir, true, "build", "-o", filepath.Join(bin, "wordcount"), "./cmd/wordcount")
		if t.Failed() {
			for _, b := range blocks {
				t.Logf("%s -> %s", b.where, b.path)
			}
		}
	})

	// README's own-module main serves word_count on a NATS server.
	t.Run("own module serves", func(t *testing.T) {
		wc := filepath.Join(bin, "wordcount")
		if _, err := os.Stat(wc); err != nil {
			t.Fatalf("not built: %v", err)
		}
		s := natstest.Start(t)
		cmd := exec.Command(wc)
		cmd.Env = append(os.Environ(), "NATS_URL="+s.URL())
		checkServesWordCount(t, s, cmd)
	})

	// README's one line: the word counter as algo/word_count and
	// {wordcount.Name, wordcount.New}, in builtins, and pnp serves it.
	t.Run("one line", func(t *testing.T) {
		const line = "{wordcount.Name, wordcount.New},"
		if !bytes.Contains(readme, []byte("`"+line+"`")) {
			t.Fatalf("README.md does not name the line %s", line)
		}
		var pkg []byte
		for _, b := range blocks {
			if b.path == "wordcount.go" && strings.HasPrefix(b.where, "README.md:") {
				pkg = b.code
			}
		}
		if pkg == nil {
			t.Fatal("README.md has no ```go wordcount.go block")
		}
		src, err := os.ReadFile(filepath.Join(root, "cmd", "pnp", "builtin.go"))
		if err != nil {
			t.Fatal(err)
		}
		list := []byte("return []builtin{\n")
		imports := []byte("import (\n")
		if !bytes.Contains(src, list) || !bytes.Contains(src, imports) {
			t.Fatalf("cmd/pnp/builtin.go has no %q or %q", list, imports)
		}
		src = bytes.Replace(src, list, append(list, "\t\t"+line+"\n"...), 1)
		src = bytes.Replace(src, imports, append(imports, fmt.Sprintf("\twordcount %q\n", mod+"/algo/word_count")...), 1)
		over := filepath.Join(dir, "overlay")
		writeFile(t, filepath.Join(over, "wordcount.go"), pkg)
		writeFile(t, filepath.Join(over, "builtin.go"), src)
		overlay, err := json.Marshal(map[string]map[string]string{"Replace": {
			filepath.Join(root, "algo", "word_count", "wordcount.go"): filepath.Join(over, "wordcount.go"),
			filepath.Join(root, "cmd", "pnp", "builtin.go"):           filepath.Join(over, "builtin.go"),
		}})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(over, "overlay.json"), overlay)
		pnp := filepath.Join(bin, "pnp")
		goCmd(ctx, t, root, false, "build", "-overlay", filepath.Join(over, "overlay.json"), "-o", pnp, "./cmd/pnp")

		s := natstest.Start(t)
		cmd := exec.Command(pnp, "runner", "--server", s.URL(), "--algorithms", "word_count")
		checkServesWordCount(t, s, cmd)
	})
}

// checkServesWordCount starts cmd, a runner of README's word counter, and
// checks its answers on s; then it interrupts cmd, which must exit cleanly.
func checkServesWordCount(t *testing.T, s *natstest.Server, cmd *exec.Cmd) {
	t.Helper()
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	nc := s.Connect()
	var reply *nats.Msg
	natstest.Eventually(t, 60*time.Second, func() bool {
		m, err := nc.Request("run.word_count", []byte(`{"text":"plug and play"}`), 5*time.Second)
		if err != nil {
			return false
		}
		reply = m
		return true
	}, "run.word_count never answered; output:\n%s", out)
	if e := protocol.ReplyError(reply); e != nil || string(reply.Data) != `{"words":3}` {
		t.Errorf("reply %s (%v), want {\"words\":3}", reply.Data, e)
	}
	for _, c := range []struct {
		body    string
		code    int
		pointer string
	}{
		{`{"text":"   "}`, 422, ""},
		{`{"text":""}`, 400, "/text"},
		{`{"text":"plug","colour":"red"}`, 400, ""},
	} {
		m, err := nc.Request("run.word_count", []byte(c.body), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		e := protocol.ReplyError(m)
		if e == nil || e.Code != c.code || (c.code == 400 && (len(e.Violations) != 1 || e.Violations[0].Pointer != c.pointer)) {
			t.Errorf("%s: reply %s, want a %d", c.body, m.Data, c.code)
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("exit after interrupt: %v; output:\n%s", err, out)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("still running 60s after an interrupt; output:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer a process writes while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// goCmd runs the go command in dir. In an external module (not this
// checkout, whose go.mod and go.sum it must not touch) it may add
// requirements to go.mod, found in the module cache or through GOPROXY.
func goCmd(ctx context.Context, t *testing.T, dir string, external bool, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if external {
		cmd.Env = append(cmd.Env, "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// modulePath reads the module line of root's go.mod.
func modulePath(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module\s+(\S+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	return strings.Trim(string(m[1]), `"`)
}

// goBlock is one ```go block of a Markdown file.
type goBlock struct {
	where    string // file:line of the fence
	path     string // where the file goes in the module
	fragment bool
	code     []byte
}

var goPathInfo = regexp.MustCompile(`^[a-z0-9_]+(/[a-z0-9_]+)*\.go$`)

// goBlocks returns every ```go block of the Markdown files under root.
func goBlocks(t *testing.T, root string) []goBlock {
	t.Helper()
	var out []goBlock
	paths := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".md") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var cur *goBlock
		inFence, indent := false, ""
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			trimmed := strings.TrimSpace(line)
			if !inFence {
				info, ok := strings.CutPrefix(trimmed, "```")
				if !ok {
					continue
				}
				inFence, indent = true, line[:len(line)-len(strings.TrimLeft(line, " \t"))]
				words := strings.Fields(info)
				if len(words) == 0 || words[0] != "go" {
					continue
				}
				b := goBlock{where: fmt.Sprintf("%s:%d", filepath.ToSlash(rel), n)}
				switch {
				case len(words) == 1:
					b.path = path.Join("docblocks", strings.NewReplacer("/", "_", ".", "_", "-", "_").Replace(strings.ToLower(filepath.ToSlash(rel))), fmt.Sprint("line", n), "block.go")
				case len(words) == 2 && words[1] == "fragment":
					b.fragment = true
				case len(words) == 2 && goPathInfo.MatchString(words[1]):
					b.path = words[1]
				default:
					t.Errorf("%s: fence info %q: want go, go fragment or go PATH.go", b.where, info)
				}
				if prev, ok := paths[b.path]; ok && b.path != "" {
					t.Errorf("%s: %s is also the file of %s", b.where, b.path, prev)
				}
				paths[b.path] = b.where
				cur = &b
				continue
			}
			if trimmed == "```" {
				if cur != nil {
					out = append(out, *cur)
				}
				inFence, cur = false, nil
				continue
			}
			if cur != nil {
				cur.code = append(cur.code, strings.TrimPrefix(line, indent)+"\n"...)
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no ```go blocks found")
	}
	return out
}
