// Package policywait waits for Felix to report that it has programmed a
// workload endpoint: Felix writes one status file per endpoint under its
// endpoint-status directory (FELIX_ENDPOINTSTATUSPATHPREFIX), named from the
// endpoint's key. Calico's `policy_setup_timeout_seconds` waits for it.
package policywait

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// recheck bounds how long the wait trusts inotify alone: the directory is
// stat'ed at least this often (it may not exist yet, or be replaced).
const recheck = 100 * time.Millisecond

// KubernetesEndpoint is the endpoint name of every pod's WorkloadEndpoint
// in the Kubernetes datastore, whatever the interface is called in the pod
// (libcalico-go's Pod conversion): the name Felix's status file carries.
const KubernetesEndpoint = "eth0"

// StatusFile is the file name Felix writes for a Kubernetes endpoint: the
// orchestrator, "<namespace>/<pod>" and the endpoint (interface) name, each
// path-escaped, joined by spaces.
func StatusFile(namespace, pod, endpoint string) string {
	return "k8s " + url.PathEscape(namespace+"/"+pod) + " " + url.PathEscape(endpoint)
}

// Wait returns nil once dir/name exists, or ctx's error when it ends first.
func Wait(ctx context.Context, dir, name string) error {
	path := filepath.Join(dir, name)
	w := newWatch(dir)
	defer w.close()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("failed to check %s: %w", path, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if w.fd < 0 {
			w = newWatch(dir) // the directory may have appeared
		}
		w.wait(ctx)
	}
}

// watch is an inotify watch on a directory; fd < 0 when it could not be set.
type watch struct{ fd int }

func newWatch(dir string) watch {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return watch{fd: -1}
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_DELETE_SELF); err != nil {
		unix.Close(fd)
		return watch{fd: -1}
	}
	return watch{fd: fd}
}

// wait blocks until an event, recheck, or the end of ctx, whichever is first,
// and drains the events (the caller stats the file again).
func (w watch) wait(ctx context.Context) {
	d := recheck
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		d = max(time.Until(dl), time.Millisecond)
	}
	if w.fd < 0 {
		time.Sleep(d)
		return
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, int(d.Milliseconds())+1); n > 0 {
		buf := make([]byte, 4096)
		for {
			if n, err := unix.Read(w.fd, buf); n <= 0 || err != nil {
				return
			}
		}
	}
}

func (w watch) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
	}
}
