package worker_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/worker"
)

// failFirstStart runs cmd as a worker until its first "stopped;
// restarting" entry and returns that entry and the logs.
func failFirstStart(t *testing.T, cfg worker.Config) (map[string]any, *logBuffer) {
	t.Helper()
	nc := natstest.Start(t).Connect()
	logs := &logBuffer{}
	cfg.Logger = zerolog.New(logs)
	cfg.MinBackoff, cfg.MaxBackoff = time.Second, time.Second
	w, err := worker.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if l := logs.lines(map[string]string{"message": "worker process stopped; restarting"}); len(l) > 0 {
			return l[0], logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no restart logged within 60s\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A worker whose interpreter lacks a module it imports fails with one
// error that names the interpreter, quotes its stderr and says what to
// try; its traceback is one log entry.
func TestStartErrorSaysWhy(t *testing.T) {
	py := python.Find(t)
	dir := t.TempDir()
	adapter := filepath.Join(dir, "adapter.py")
	if err := os.WriteFile(adapter, []byte("import no_such_module_here\n\ndef run_x(a: int) -> int:\n    return a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sdk, _ := filepath.Abs("../sdk/python/pnpworker.py")
	entry, logs := failFirstStart(t, worker.Config{Command: []string{py, sdk, adapter}})
	msg, _ := entry["error"].(string)
	for _, want := range []string{
		"worker process " + py, "ended before its hello", "exit status 1",
		"ModuleNotFoundError: No module named 'no_such_module_here'",
		`cannot import "no_such_module_here"`, "/usr/bin/python3",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("start error lacks %q:\n%s", want, msg)
		}
	}
	var tracebacks []string
	for _, l := range logs.lines(map[string]string{"source": "stderr"}) {
		if m, _ := l["message"].(string); strings.Contains(m, "Traceback") || strings.Contains(m, "File \"") {
			tracebacks = append(tracebacks, m)
		}
	}
	if len(tracebacks) != 1 {
		t.Fatalf("traceback logged as %d entries, want 1:\n%s", len(tracebacks), logs)
	}
	if tb := tracebacks[0]; !strings.HasPrefix(tb, "Traceback (most recent call last):\n") || !strings.HasSuffix(tb, "ModuleNotFoundError: No module named 'no_such_module_here'") {
		t.Errorf("traceback entry = %q, want the whole traceback through its exception line", tb)
	}
}

// A relative adapter path that does not exist from the worker's
// directory is named as such.
func TestStartErrorMissingFile(t *testing.T) {
	py := python.Find(t)
	dir := t.TempDir()
	entry, _ := failFirstStart(t, worker.Config{Command: []string{py, "adapter.py"}, Dir: dir})
	msg, _ := entry["error"].(string)
	for _, want := range []string{"can't open file", `"` + filepath.Join(dir, "adapter.py") + `" does not exist from ` + dir, "--worker-dir"} {
		if !strings.Contains(msg, want) {
			t.Errorf("start error lacks %q:\n%s", want, msg)
		}
	}
}

// Dir is the process's working directory: an adapter that opens a file
// by a relative path (a model beside it) is served when Dir is its
// directory.
func TestWorkerDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "labels.txt"), []byte("cat\ndog\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	adapter := filepath.Join(dir, "labels_adapter.py")
	if err := os.WriteFile(adapter, []byte(`
_labels = None

def setup():
    global _labels
    with open("labels.txt") as f:  # relative, as the article's models are
        _labels = f.read().split()

def run_label(i: int) -> str:
    return _labels[i]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := natstest.Start(t)
	nc := s.Connect()
	cmd := sdkCommand(t, "labels_adapter.py")
	startWorker(t, nc, worker.Config{Command: cmd, Dir: dir})
	if got := string(waitServing(t, nc, "label", `{"i":1}`, 60*time.Second).Data); got != `"dog"` {
		t.Fatalf("label 1 = %s, want \"dog\"", got)
	}
}
