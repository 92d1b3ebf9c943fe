//go:build !linux

package bench

import (
	"errors"
	"time"
)

// PIDCPU is not available here: it reads /proc.
func PIDCPU(pid int) (time.Duration, error) {
	return 0, errors.New("per-process CPU times need Linux's /proc")
}

// Children is not available here: it reads /proc.
func Children(pid int) []int { return nil }
