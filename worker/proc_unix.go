//go:build unix

package worker

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the process in its own process group, so that killing
// it also kills what it started (a shell wrapper's children, a helper it
// forked), and a Ctrl-C at the terminal reaches the runner only: the
// runner stops its workers.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcess kills the process and its group. The caller makes sure the
// process has not been reaped: its pid, and so its group's id, is still
// its own.
func killProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}
