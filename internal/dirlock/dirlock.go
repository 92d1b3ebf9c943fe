// Package dirlock gives one process at a time a data directory. `pnp up`
// takes the lock before its embedded NATS server opens the JetStream store
// in the directory: two servers on one store corrupt it ("stream state
// outdated", "usage drift") long before the second one fails on its port.
//
// The lock is an advisory flock(2) on a file in the directory, holding the
// owner's pid. The kernel releases it when the owner exits, however it
// exits, so a crash never leaves a stale lock behind.
//
// A lock protects a whole tree, not one path: the directory is resolved
// to its canonical path (symlinks followed), and it is refused when a
// held lock is found in a directory above it or anywhere below it. NATS
// moves what it takes for an account directory next to its store into the
// store ("JetStream relocated account"), so a server whose data directory
// is the store of another one (pnp up --data D/jetstream next to pnp up
// --data D) moves the running store away from under its owner.
package dirlock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FileName is the lock file created in the locked directory.
const FileName = ".pnp.lock"

// ErrInUse is wrapped by Acquire's error when another process (or another
// Acquire in this one) holds the directory.
var ErrInUse = errors.New("in use")

// InUseError says who holds a directory, or the directory above or below
// it that makes it unusable.
type InUseError struct {
	// Dir is the directory, canonical.
	Dir string
	// PID is the holder's process id, as it wrote it in the lock file; 0
	// when it could not be read.
	PID int
	// Held is the locked directory when it is not Dir: a directory above
	// Dir (Dir is inside another process's data) or below it (Dir holds
	// another process's data). Empty when Dir itself is held.
	Held string
	// Above is true when Held is above Dir, false when it is below.
	Above bool
}

func (e *InUseError) Error() string {
	by := "another process"
	if e.PID != 0 {
		by = "pid " + strconv.Itoa(e.PID)
	}
	switch {
	case e.Held == "":
		return fmt.Sprintf("data directory %s is in use by %s", e.Dir, by)
	case e.Above:
		return fmt.Sprintf("data directory %s is inside data directory %s, in use by %s: one JetStream store may not hold another", e.Dir, e.Held, by)
	default:
		return fmt.Sprintf("data directory %s contains data directory %s, in use by %s: one JetStream store may not hold another", e.Dir, e.Held, by)
	}
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
// directory is held, when a directory above it is held (dir is inside
// another process's data), or when a directory below it is (dir holds
// another process's data); dir is resolved first, so a symlink to a held
// directory, or into one, is refused too. It fails with another error when
// the lock file cannot be created, or dir holds more than MaxEntries
// entries to look through. Locks are per open file, so a second Acquire of
// the same directory in the same process fails too.
//
// The lock is taken before the tree is searched, so of two processes
// starting at once on nested directories at least one sees the other.
func Acquire(dir string) (*Lock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	path := filepath.Join(abs, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory %s: %w", abs, err)
	}
	// A holder without a pid in its file is one that has just taken the
	// lock, or another process testing it for a moment (below): try again
	// for a little while before calling it in use.
	var held bool
	for try := 0; ; try++ {
		if held, err = tryLock(f); err != nil || !held || readPID(f) != 0 || try == 20 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock data directory %s: %w", abs, err)
	}
	if held {
		pid := readPID(f)
		f.Close()
		return nil, &InUseError{Dir: abs, PID: pid}
	}
	l := &Lock{f: f, dir: abs}
	if err := writePID(f); err != nil {
		_ = l.Release()
		return nil, fmt.Errorf("lock data directory %s: write pid: %w", abs, err)
	}
	if err := checkTree(abs); err != nil {
		_ = l.Release()
		return nil, err
	}
	return l, nil
}

// MaxEntries bounds the entries Acquire looks through below a directory
// for another process's lock: a JetStream store holds some per stream and
// consumer, far fewer.
const MaxEntries = 100_000

// storeDirName is the directory NATS keeps its store in, under the
// directory it is given.
const storeDirName = "jetstream"

// checkTree refuses dir when a held lock is above or below it, or above
// or below where its store directory (a symlink, maybe) leads.
func checkTree(dir string) error {
	roots := []string{dir}
	if real, err := filepath.EvalSymlinks(filepath.Join(dir, storeDirName)); err == nil && filepath.Dir(real) != dir {
		roots = append(roots, real)
	}
	for _, root := range roots {
		for up := root; ; {
			parent := filepath.Dir(up)
			if up != dir {
				// root itself when it is the store a symlink leads to;
				// dir's own lock is ours.
				if pid, ok := heldBy(filepath.Join(up, FileName)); ok {
					return &InUseError{Dir: dir, PID: pid, Held: up, Above: true}
				}
			}
			if parent == up {
				break
			}
			up = parent
		}
		if err := checkBelow(dir, root); err != nil {
			return err
		}
	}
	return nil
}

// checkBelow looks for a held lock file below root, not following
// symlinks.
func checkBelow(dir, root string) error {
	n := 0
	own := filepath.Join(dir, FileName)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // unreadable: nothing we could open there either
		}
		if n++; n > MaxEntries {
			return fmt.Errorf("lock data directory %s: more than %d entries below %s to look through for another process's data; use a directory of its own", dir, MaxEntries, root)
		}
		if d.IsDir() || d.Name() != FileName || path == own {
			return nil
		}
		if pid, ok := heldBy(path); ok {
			return &InUseError{Dir: dir, PID: pid, Held: filepath.Dir(path)}
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// heldBy reports whether the lock file at path is held, and by which pid.
// It takes a shared lock for a moment to find out, which a process taking
// the lock at that very moment sees as held without a pid: Acquire tries
// again then.
func heldBy(path string) (pid int, held bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	held, err = tryShared(f)
	if err != nil || !held {
		return 0, false
	}
	return readPID(f), true
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
