package dirlock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecondAcquireInProcess relies on flock locks belonging to an open
// file description: a second open of the lock file in the same process
// conflicts with the first.
func TestSecondAcquireInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var inUse *InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrInUse) {
		t.Fatalf("second Acquire: want an InUseError, got %v", err)
	}
	want := fmt.Sprintf("data directory %s is in use by pid %d", l.Dir(), os.Getpid())
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	if err := l2.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l2.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

// TestHolderProcess is not a test: TestOtherProcess runs the test binary
// with DIRLOCK_HOLD set, and this holds the lock until stdin closes.
func TestHolderProcess(t *testing.T) {
	dir := os.Getenv("DIRLOCK_HOLD")
	if dir == "" {
		t.Skip("helper process for TestOtherProcess")
	}
	l, err := Acquire(dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	_ = l.Release()
	os.Exit(0)
}

// TestOtherProcess holds the lock in a child process and checks this
// process is refused with the child's pid, and gets the lock once the
// child is gone.
func TestOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolderProcess$")
	cmd.Env = append(os.Environ(), "DIRLOCK_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("holder: %q, %v", line, err)
	}

	_, err = Acquire(dir)
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("want an InUseError while the child holds the lock, got %v", err)
	}
	if inUse.PID != cmd.Process.Pid {
		t.Fatalf("error names pid %d, the holder is %d", inUse.PID, cmd.Process.Pid)
	}

	// The child exits without releasing (killed): the kernel drops the lock.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	stdin.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := Acquire(dir)
		if err == nil {
			_ = l.Release()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock not free after the holder was killed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNestedDirectories holds a lock on one directory and tries others
// around it: inside it, inside its store, through a symlink, above it.
// Each is refused naming the held directory; a sibling and a directory
// next to a released lock are not.
func TestNestedDirectories(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	held := filepath.Join(root, "a", "data")
	mkdir := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mkdir(filepath.Join(held, storeDirName))
	l, err := Acquire(held)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if err := os.Symlink(filepath.Join(held, storeDirName), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	// A data directory elsewhere whose store is a symlink into the held one.
	other := mkdir(filepath.Join(root, "other"))
	if err := os.Symlink(filepath.Join(held, storeDirName), filepath.Join(other, storeDirName)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		above     bool // the held directory is above, or else below
		free      bool
	}{
		{name: "its store", dir: filepath.Join(held, storeDirName), above: true},
		{name: "deep inside", dir: mkdir(filepath.Join(held, storeDirName, "x", "y")), above: true},
		{name: "symlink to its store", dir: filepath.Join(root, "link"), above: true},
		{name: "store symlinked into it", dir: other, above: true},
		{name: "its parent", dir: filepath.Join(root, "a"), above: false},
		{name: "the root above", dir: root, above: false},
		{name: "a sibling", dir: mkdir(filepath.Join(root, "a", "sibling")), free: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l2, err := Acquire(tc.dir)
			if tc.free {
				if err != nil {
					t.Fatalf("Acquire: %v", err)
				}
				_ = l2.Release()
				return
			}
			var inUse *InUseError
			if !errors.As(err, &inUse) || !errors.Is(err, ErrInUse) {
				t.Fatalf("Acquire: want an InUseError, got %v", err)
			}
			if inUse.Held != held || inUse.Above != tc.above || inUse.PID != os.Getpid() {
				t.Fatalf("error %+v, want held %s above=%v by pid %d", inUse, held, tc.above, os.Getpid())
			}
		})
	}
	// Refused, none of them kept a lock: the held directory is released
	// and every one of them can be taken in turn.
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, filepath.Join(held, storeDirName)} {
		l2, err := Acquire(d)
		if err != nil {
			t.Fatalf("Acquire %s after release: %v", d, err)
		}
		_ = l2.Release()
	}
}
