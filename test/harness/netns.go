package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsPrefix names every namespace and temp dir the harness makes, followed by
// the owning process's PID, so leftovers of a killed test run can be swept.
const nsPrefix = "kddcni-"

var nsCounter atomic.Int64

// NetNS is a named network namespace under /run/netns made by the harness.
type NetNS struct {
	Name string
	Path string
}

// NewNetNS creates a named network namespace with its loopback up.
func NewNetNS(role string) (*NetNS, error) {
	name := fmt.Sprintf("%s%d-%s%d", nsPrefix, os.Getpid(), role, nsCounter.Add(1))
	errc := make(chan error, 1)
	go func() {
		// The thread switches namespace; it is thrown away (never unlocked)
		// if switching back fails.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("failed to get current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- fmt.Errorf("failed to create netns %s: %w", name, err)
			return
		}
		h.Close()
		err = setLoopbackUp()
		if serr := netns.Set(orig); serr != nil {
			errc <- fmt.Errorf("failed to return to the original netns: %w", serr)
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("failed to set lo up in %s: %w", name, err)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		_ = netns.DeleteNamed(name)
		return nil, err
	}
	return &NetNS{Name: name, Path: filepath.Join(netnsRunDir, name)}, nil
}

const netnsRunDir = "/run/netns"

// Close removes the namespace; processes still inside keep it alive until they exit.
func setLoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

func (n *NetNS) Close() error {
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to delete netns %s: %w", n.Name, err)
	}
	return nil
}

// Do runs fn on a thread inside the namespace.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(n.Path)
		if err != nil {
			errc <- fmt.Errorf("failed to open netns %s: %w", n.Path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("failed to enter netns %s: %w", n.Path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("failed to leave netns %s: %w", n.Path, err)
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// launcher owns one OS thread parked inside a namespace. Every process the
// harness starts for that namespace is forked from this thread, so children
// inherit the namespace, and Pdeathsig (which follows the parent thread) only
// fires when the launcher stops or the test process dies.
type launcher struct {
	ns    *NetNS
	reqs  chan func()
	once  sync.Once
	alive chan struct{}
}

func newLauncher(n *NetNS) (*launcher, error) {
	l := &launcher{ns: n, reqs: make(chan func()), alive: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		target, err := netns.GetFromPath(n.Path)
		if err == nil {
			err = netns.Set(target)
			target.Close()
		}
		errc <- err
		if err != nil {
			return
		}
		defer close(l.alive)
		for fn := range l.reqs {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("failed to start launcher in %s: %w", n.Path, err)
	}
	return l, nil
}

// run executes fn on the launcher thread.
func (l *launcher) run(fn func()) {
	done := make(chan struct{})
	l.reqs <- func() { fn(); close(done) }
	<-done
}

// start forks cmd from the launcher thread. killWithParent asks the kernel
// to kill the child if the launcher thread (and so the test process) dies.
func (l *launcher) start(cmd *exec.Cmd, killWithParent bool) error {
	if killWithParent {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	var err error
	l.run(func() { err = cmd.Start() })
	return err
}

// dial opens a connection from inside the namespace.
func (l *launcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var (
		c   net.Conn
		err error
	)
	l.run(func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, err
}

func (l *launcher) stop() {
	l.once.Do(func() { close(l.reqs); <-l.alive })
}

// sweepStale removes namespaces and temp dirs left by harness processes that
// no longer exist (e.g. a test binary killed with SIGKILL).
func sweepStale() {
	alive := func(name string) bool {
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			return true
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			return true
		}
		return pid == os.Getpid() || syscall.Kill(pid, 0) == nil
	}
	if entries, err := os.ReadDir(netnsRunDir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), nsPrefix) && !alive(e.Name()) {
				_ = netns.DeleteNamed(e.Name())
			}
		}
	}
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		// A live run's Hosts may bind on the same mount points: leave them.
		hostsAlive := slices.ContainsFunc(entries, func(e os.DirEntry) bool {
			return strings.HasSuffix(e.Name(), mountPointsSuffix) && strings.HasPrefix(e.Name(), nsPrefix) && alive(e.Name())
		})
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), nsPrefix) && !alive(e.Name()) {
				p := filepath.Join(os.TempDir(), e.Name())
				if strings.HasSuffix(e.Name(), mountPointsSuffix) {
					if hostsAlive {
						continue
					}
					removeListedMountPoints(p)
				}
				UnmountUnder(p) // a Host's mount namespace
				_ = os.RemoveAll(p)
			}
		}
	}
}

// UnmountUnder lazily unmounts every mount below dir, deepest first.
func UnmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
