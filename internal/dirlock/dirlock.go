// Package dirlock gives one process at a time a data directory. `pnp up`
// takes the lock before its embedded NATS server opens the JetStream store
// in the directory: two servers on one store corrupt it ("stream state
// outdated", "usage drift") long before the second one fails on its port.
//
// The lock is an advisory flock(2) on a file in the directory, holding the
// owner's pid. The kernel releases it when the owner exits, however it
// exits, so a crash never leaves a stale lock behind.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file created in the locked directory.
const FileName = ".pnp.lock"

// ErrInUse is wrapped by Acquire's error when another process (or another
// Acquire in this one) holds the directory.
var ErrInUse = errors.New("in use")

// InUseError says who holds a directory.
type InUseError struct {
	// Dir is the directory.
	Dir string
	// PID is the holder's process id, as it wrote it in the lock file; 0
	// when it could not be read.
	PID int
}

func (e *InUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("data directory %s is in use by another process", e.Dir)
	}
	return fmt.Sprintf("data directory %s is in use by pid %d", e.Dir, e.PID)
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// Lock is a held directory lock. Release it when done; it is released
// anyway when the process exits.
type Lock struct {
	f   *os.File
	dir string
}

// Acquire locks dir, which must exist, without waiting. It fails with an
// *InUseError (wrapping ErrInUse) naming the holder's pid when the
// directory is held, and with another error when the lock file cannot be
// created. Locks are per open file, so a second Acquire of the same
// directory in the same process fails too.
func Acquire(dir string) (*Lock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	path := filepath.Join(abs, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory %s: %w", abs, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock data directory %s: %w", abs, err)
	}
	if held {
		pid := readPID(f)
		f.Close()
		return nil, &InUseError{Dir: abs, PID: pid}
	}
	if err := writePID(f); err != nil {
		_ = unlock(f)
		f.Close()
		return nil, fmt.Errorf("lock data directory %s: write pid: %w", abs, err)
	}
	return &Lock{f: f, dir: abs}, nil
}

// Dir is the locked directory, absolute.
func (l *Lock) Dir() string { return l.dir }

// Release unlocks the directory. The lock file stays (removing it would
// race with a process that just opened it); it is reused by the next
// owner. Release is safe to call more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := errors.Join(l.f.Truncate(0), unlock(l.f), l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock data directory %s: %w", l.dir, err)
	}
	return nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return f.Sync()
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
