// Package nodestate owns the node-local state directory (state_dir): its
// layout (Dir, the one place it is spelled), its guard (Check), and what is
// kept there: the journal's entries, the per-invocation records, the pod
// locks, the ADD marks and the podCIDR copies (the plugins' cache and
// install-cni's watched copy). The journal the plugin replays with its API identity, the pod
// locks, the GC marks and the podCIDRs ADD allocates from all live there,
// so whoever can write into it steers the plugin: it must be root's (the
// plugin's user's) and writable by no one else.
package nodestate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// Dir is a state_dir: the one place its layout is spelled. This package
// keeps the journal, the records, the locks, the ADD marks and the podCIDR
// copies; sweep keeps GC's stale marks in GC, health STATUS's last good
// answer in Verified.
type Dir string

// Journal holds the annotation clears and reasserts not yet sent.
func (d Dir) Journal() Journal { return Journal(filepath.Join(string(d), "journal")) }

// Records holds the per-invocation records the sidecar serves as metrics.
func (d Dir) Records() Records { return Records(filepath.Join(string(d), "metrics")) }

// Locks holds the per-pod locks.
func (d Dir) Locks() Locks { return Locks(filepath.Join(string(d), "locks")) }

// Adding holds the marks of running ADDs.
func (d Dir) Adding() Marks { return Marks(filepath.Join(string(d), "adding")) }

// GC holds the marks of attachments GC found stale.
func (d Dir) GC() string { return filepath.Join(string(d), "gc") }

// Verified keeps the API server's last good answer to STATUS's checks.
func (d Dir) Verified() string { return filepath.Join(string(d), "status-verified") }

// PodCIDRs holds the podCIDR copies: the plugins' cache and the sidecar's
// watched copy with its lock.
func (d Dir) PodCIDRs() string { return filepath.Join(string(d), "podcidrs") }
