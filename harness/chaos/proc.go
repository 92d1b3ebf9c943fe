package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process of the pnp binary.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	readyCh chan struct{}
}

// procs starts and tracks the child processes of a scenario.
type procs struct {
	bin    string
	logDir string
	mu     sync.Mutex
	all    []*Proc
	seq    int
}

func (ps *procs) start(name string, args ...string) (*Proc, error) {
	ps.mu.Lock()
	ps.seq++
	n := ps.seq
	ps.mu.Unlock()
	logf, err := os.Create(filepath.Join(ps.logDir, fmt.Sprintf("%03d-%s.log", n, name)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(ps.bin, args...)
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), "PNP_LOG_LEVEL=info")
	// Each child in its own process group, so that a signal sent to the
	// scenario's terminal does not reach it before the scenario stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if strings.HasPrefix(sc.Text(), "ready") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	p.readyCh = ready
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Alive reports whether the process has not exited.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to d, then SIGKILL.
func (p *Proc) Stop(d time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.Kill()
	}
}

// waitReady waits for a line starting with "ready" on the child's stdout.
func (p *Proc) waitReady(ctx context.Context, d time.Duration) error {
	select {
	case <-p.readyCh:
		return nil
	case <-p.done:
		return fmt.Errorf("chaos: %s exited before it was ready: %v", p.Name, p.err)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return errors.New("chaos: " + p.Name + " not ready in time")
	}
}

// stopAll stops whatever is still running: clients first, all at once
// (SIGTERM, so runners deregister), then the NATS servers they need for
// that.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := append([]*Proc(nil), ps.all...)
	ps.mu.Unlock()
	for _, servers := range []bool{false, true} {
		var wg sync.WaitGroup
		for _, p := range all {
			if p.Alive() && strings.HasPrefix(p.Name, "nats") == servers {
				wg.Add(1)
				go func() { defer wg.Done(); p.Stop(5 * time.Second) }()
			}
		}
		wg.Wait()
	}
}

func (ps *procs) alive() []*Proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []*Proc
	for _, p := range ps.all {
		if p.Alive() {
			out = append(out, p)
		}
	}
	return out
}
