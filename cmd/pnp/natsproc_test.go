package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/runner"
)

// natsServerBuild is the nats-server binary built from the module cache,
// once per test binary; TestMain removes it.
var natsServerBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

// natsServerPath builds nats-server (the version go.mod requires) and
// returns its path. A failed build fails the test: go is all it needs.
func natsServerPath(t *testing.T) string {
	t.Helper()
	b := &natsServerBuild
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "pnp-nats-server-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", b.path, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// removeNATSServerBuild removes what natsServerPath built.
func removeNATSServerBuild() {
	if natsServerBuild.dir != "" {
		os.RemoveAll(natsServerBuild.dir)
	}
}

// natsProc is a nats-server process on loopback.
type natsProc struct {
	name, url, log string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// startNATS runs nats-server named name with a client port on loopback
// and the configuration body (everything but server_name and listen),
// waits until it accepts clients and stops it when the test ends, showing
// its log if the test failed.
func startNATS(t *testing.T, name, body string) *natsProc {
	t.Helper()
	_, port := freeLoopbackAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, name+".conf")
	text := fmt.Sprintf("server_name: %s\nlisten: \"127.0.0.1:%d\"\n%s\n", name, port, body)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &natsProc{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", port), log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(natsServerPath(t), "-c", conf)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("nats-server %s log:\n%s\nconfig:\n%s", name, tail(string(b), 40), text)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("nats-server %s exited:\n%s\nconfig:\n%s", name, b, text)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s not accepting clients after 30s", name)
		}
	}
}

// stop shuts the server down (SIGTERM, then SIGKILL after 20 s).
func (p *natsProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// connectNATS connects to url for the test's duration.
func connectNATS(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// tcpProxy forwards loopback TCP connections to target until cut: then
// it closes every open connection and refuses new ones until restored,
// as a network partition would.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			down.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			down.Close()
			up.Close()
			continue
		}
		p.conns[down], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(down, up)
		go p.pipe(up, down)
	}
}

// pipe copies from src to dst; when either side ends, both close.
func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
	dst.Close()
	src.Close()
}

// Cut closes every forwarded connection and refuses new ones.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore forwards new connections again.
func (p *tcpProxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// countingAlgorithm is algorithm name answering {"id": id} with
// {"id": id, "by": by} and counting, per id, how often it ran.
type countingAlgorithm struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCountingAlgorithm(t *testing.T, name, by string) (*runner.Algorithm, *countingAlgorithm) {
	t.Helper()
	c := &countingAlgorithm{counts: map[string]int{}}
	type in struct {
		ID string `json:"id"`
	}
	type out struct {
		ID string `json:"id"`
		By string `json:"by"`
	}
	alg, err := runner.NewAlgorithm(runner.Spec{
		Name:         name,
		Version:      "1.0.0",
		InputSchema:  []byte(`{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["id","by"],"properties":{"id":{"type":"string"},"by":{"type":"string"}}}`),
	}, func(_ context.Context, i in) (out, error) {
		c.mu.Lock()
		c.counts[i.ID]++
		c.mu.Unlock()
		return out{ID: i.ID, By: by}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return alg, c
}

// count returns how often id ran.
func (c *countingAlgorithm) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[id]
}

// runRunner runs a runner of algs over nc until stop is called or the
// test ends and waits until it serves.
func runRunner(t *testing.T, nc *nats.Conn, algs []*runner.Algorithm, opts ...runner.Option) (stop func()) {
	t.Helper()
	r, err := runner.New(nc, algs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = r.Run(ctx)
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
				if runErr != nil && !errors.Is(runErr, context.Canceled) {
					t.Errorf("runner: %v", runErr)
				}
			case <-time.After(pnpTimeout):
				t.Errorf("runner did not stop within %s", pnpTimeout)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-r.Started():
	case <-done:
		t.Fatalf("runner stopped before starting: %v", runErr)
	case <-time.After(pnpTimeout):
		t.Fatalf("runner did not start within %s", pnpTimeout)
	}
	return stop
}

// answeredBy sends {"id": id} to run.<alg> over nc and returns the "by"
// of the answer.
func answeredBy(t *testing.T, nc *nats.Conn, alg, id string) string {
	t.Helper()
	msg, err := nc.Request("run."+alg, []byte(fmt.Sprintf(`{"id":%q}`, id)), 10*time.Second)
	if err != nil {
		t.Fatalf("request run.%s: %v", alg, err)
	}
	var out struct{ By string }
	if err := json.Unmarshal(msg.Data, &out); err != nil || out.By == "" {
		t.Fatalf("request run.%s: answer %q (headers %v)", alg, msg.Data, msg.Header)
	}
	return out.By
}
