package nodestate

// Pod locks serialize plugin invocations for one pod on one node. The
// kubelet does this per pod already; the lock makes it hold for any caller,
// so concurrent sandboxes of a pod never interleave their steps.
//
// The lock is flock(2) on a file in a directory only root may enter (0700,
// under state_dir): no other process on the node, and certainly no
// unprivileged one, can take or squat it, and the kernel releases it when
// the holder exits, even on SIGKILL. The holder removes the file when it
// releases the lock, so none accumulate; a waiter that locked a file removed
// meanwhile notices (the path no longer names its file) and tries again.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Locks is the directory of the per-pod locks (Dir.Locks).
type Locks string

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
}

// Acquire takes the lock called name (a file name), waiting until ctx is
// done. The directory is created 0700 (and tightened to 0700 if it exists).
func (ls Locks) Acquire(ctx context.Context, name string) (*Lock, error) {
	dir := string(ls)
	if err := secureDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		l, err := try(path)
		if err != nil {
			return nil, fmt.Errorf("failed to lock %s: %w", path, err)
		}
		if l != nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("failed to lock %s: another invocation for this pod holds it: %w", path, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// try takes the lock if it is free; (nil, nil) means it is held.
func try(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	held, err1 := f.Stat()
	named, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, named) {
		f.Close() // the holder before us removed it: lock the new file
		return nil, nil
	}
	return &Lock{f: f, path: path}, nil
}

func secureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create lock directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("lock directory %s is not a directory owned by uid %d", dir, os.Geteuid())
	}
	if st.Mode().Perm() != 0o700 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// Release removes the file and drops the lock.
func (l *Lock) Release() {
	if l != nil {
		os.Remove(l.path)
		l.f.Close()
	}
}
