package capacity

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// roleEnv names the role a re-started test binary plays (roles.go); the
// other settings of a role travel in environment variables too.
const roleEnv = "PNP_CAPACITY_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	serverBin string
	buildErr  error
)

// natsServerBinary builds nats-server from the module cache once per test
// binary.
func natsServerBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pnp-capacity-bin-")
		if buildErr != nil {
			return
		}
		serverBin = filepath.Join(binDir, "nats-server")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", serverBin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return serverBin
}

// freePort returns a TCP port on 127.0.0.1 nobody listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a nats-server process with JetStream, on loopback.
type server struct {
	cmd     *exec.Cmd
	url     string
	monitor string
}

// startServer starts nats-server with JetStream as nats.conf runs it
// (sync_interval: always unless syncAlways is false), a store in a
// temporary directory, and the monitoring port on, and stops it at
// cleanup.
func startServer(tb testing.TB, syncAlways bool) *server {
	tb.Helper()
	bin := natsServerBinary(tb)
	dir := tb.TempDir()
	port, mport := freePort(tb), freePort(tb)
	sync := ""
	if syncAlways {
		sync = "sync_interval: always"
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: 512KB\njetstream {\n  store_dir: %q\n  %s\n}\n",
		port, mport, filepath.Join(dir, "js"), sync)
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s := &server{cmd: cmd, url: fmt.Sprintf("nats://127.0.0.1:%d", port), monitor: fmt.Sprintf("http://127.0.0.1:%d", mport)}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.monitor + "/healthz?js-enabled-only=true")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			tb.Fatalf("nats-server did not become healthy in 30 s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) connect(tb testing.TB, name string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.url, nats.Name(name), nats.Timeout(10*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// varz is the part of the server's /varz this harness reads.
type varz struct {
	InMsgs   int64 `json:"in_msgs"`
	OutMsgs  int64 `json:"out_msgs"`
	InBytes  int64 `json:"in_bytes"`
	OutBytes int64 `json:"out_bytes"`
}

func (s *server) varz(tb testing.TB) varz {
	tb.Helper()
	resp, err := http.Get(s.monitor + "/varz")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var v varz
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// usage is what the operating system says about a process.
type usage struct {
	CPU time.Duration // user + system
	RSS int64         // resident set, bytes
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procUsage reads /proc/<pid>/stat and /proc/<pid>/status (Linux only).
func procUsage(pid int) (usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return usage{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return usage{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	if err := errors.Join(err1, err2); err != nil {
		return usage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	u := usage{CPU: time.Duration(ut+st) * clockTick}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return usage{}, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", pid, rest, err)
			}
			u.RSS = kb << 10
		}
	}
	return u, nil
}

func mustUsage(tb testing.TB, pid int) usage {
	tb.Helper()
	u, err := procUsage(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// child is the test binary running one role (roles.go). It writes one JSON
// object per line on its stdout; the last one is kept.
type child struct {
	role string
	cmd  *exec.Cmd
	mu   sync.Mutex
	last report
	got  chan struct{} // signalled at every line
	done chan struct{} // closed when stdout ends
	err  strings.Builder
}

// startChild starts the test binary in role with env added, and stops it
// (interrupt, then kill) at cleanup.
func startChild(tb testing.TB, role string, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + role}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	c := &child{role: role, cmd: cmd, got: make(chan struct{}, 1), done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: &c.err, mu: &c.mu}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go c.read(out)
	tb.Cleanup(func() { c.stop(tb) })
	return c
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (c *child) read(r io.Reader) {
	defer close(c.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rep report
		if json.Unmarshal(sc.Bytes(), &rep) != nil {
			continue // not ours (the testing package's own lines)
		}
		c.mu.Lock()
		c.last = rep
		c.mu.Unlock()
		select {
		case c.got <- struct{}{}:
		default:
		}
	}
}

func (c *child) report() report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// waitFor waits until the child's last report satisfies ok, failing after
// timeout or when the child exits.
func (c *child) waitFor(tb testing.TB, timeout time.Duration, what string, ok func(report) bool) report {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		if r := c.report(); ok(r) {
			return r
		}
		select {
		case <-c.got:
		case <-c.done:
			if r := c.report(); ok(r) {
				return r
			}
			tb.Fatalf("%s exited before %s; last report %+v; stderr: %s", c.role, what, c.report(), c.stderr())
		case <-deadline:
			tb.Fatalf("%s: no %s within %s; last report %+v; stderr: %s", c.role, what, timeout, c.report(), c.stderr())
		}
	}
}

// stderr returns what the child wrote on its standard error: the first
// and the last 3000 bytes of it, where the first failure and the last
// words are.
func (c *child) stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.err.String()
	if len(s) > 6000 {
		s = s[:3000] + "\n…\n" + s[len(s)-3000:]
	}
	return s
}

func (c *child) stop(tb testing.TB) {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	exited := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-exited
		tb.Errorf("%s did not stop within 30 s of an interrupt", c.role)
	}
}
