// Package statedir guards the node-local state directory (state_dir): the
// journal the plugin replays with its API identity, the pod locks, the GC
// marks and the podCIDR copy ADD allocates from all live there, so whoever
// can write into it steers the plugin. It must be root's (the plugin's
// user's) and writable by no one else.
package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Check refuses a state directory owned by another user or writable by
// group or others (someone else may have planted files in it), and
// tightens one of the plugin's own with a looser mode to 0700. A missing
// one is fine: the plugin creates its parts 0700.
func Check(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to check state_dir %s: %w", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok {
		return fmt.Errorf("invalid state_dir %s: not a directory", dir)
	}
	if euid := os.Geteuid(); int(sys.Uid) != euid {
		return fmt.Errorf("invalid state_dir %s: owned by uid %d, not %d: chown it to root (it holds what the plugin trusts)", dir, sys.Uid, euid)
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("invalid state_dir %s: mode %04o lets others write into it: chmod 0700 it and check its contents", dir, perm)
	} else if perm != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("failed to tighten state_dir %s to 0700: %w", dir, err)
		}
	}
	return nil
}
