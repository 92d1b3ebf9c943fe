//go:build linux

package worker

import (
	"errors"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// awaitExit waits until the process has exited, without reaping it: its
// pid stays its own (a zombie), so its process group can still be killed
// by that id without the risk of reaching a process that reused it. It
// reports false when it could not wait.
func awaitExit(cmd *exec.Cmd) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return err == nil
		}
	}
}
