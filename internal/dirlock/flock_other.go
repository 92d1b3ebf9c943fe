//go:build !unix

package dirlock

import "os"

// tryLock never finds the directory held where flock does not exist: the
// lock file still records the pid, but nothing is enforced.
func tryLock(*os.File) (bool, error) { return false, nil }

func unlock(*os.File) error { return nil }

func tryShared(*os.File) (bool, error) { return false, nil }
