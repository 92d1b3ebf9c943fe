//go:build unix

package worker

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the process in its own process group, so that killing
// it also kills what it started (a shell wrapper's children), and a Ctrl-C
// at the terminal reaches the runner only: the runner stops its workers.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func killProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}
