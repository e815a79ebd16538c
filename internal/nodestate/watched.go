package nodestate

// The node's podCIDRs as install-cni's sidecar watches them. While its
// watch on the Node is established it holds an exclusive flock on a lock
// file and keeps a copy of the Node's podCIDRs beside it, written on every
// change and removed when the Node is deleted or has none. The plugins
// trust that copy instead of reading the Node: it is as current as the
// apiserver's watch cache, which is what their own read (resourceVersion=0)
// is served from. A sidecar that dies releases the lock with its last file
// descriptor, so a copy left behind is never trusted. A sidecar that lives
// but stops hearing from the API server (a stalled watch, SIGSTOP) stops
// confirming its copy: each copy carries when it was last confirmed (a
// watch event, bookmark or resumed watch), and one older than PodCIDRMaxAge is not
// trusted.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/boottime"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

func watchedPath(stateDir, node string) string {
	return filepath.Join(Dir(stateDir).PodCIDRs(), node+".watched.json")
}

func watchLockPath(stateDir, node string) string {
	return filepath.Join(Dir(stateDir).PodCIDRs(), node+".watch.lock")
}

// PodCIDRMaxAge is how long a copy is trusted after the sidecar last confirmed
// it; the sidecar's watch confirms it at least every 18 s.
const PodCIDRMaxAge = 45 * time.Second

// watchedCopy is the file: the podCIDRs and when (boottime) they were last
// confirmed.
type watchedCopy struct {
	podcidr.NodeCIDRs
	ConfirmedAt int64 `json:"confirmedAt"`
}

// WatchedPodCIDRs reads the sidecar's copy of the node's podCIDRs; ok is false
// unless a live watch holds the lock both before and after the read (so a
// copy from a watch that ended in between is at most that read old) and
// the copy was confirmed within PodCIDRMaxAge.
func WatchedPodCIDRs(stateDir, node string) (podcidr.NodeCIDRs, bool) {
	lock := watchLockPath(stateDir, node)
	if !watchLive(lock) {
		return podcidr.NodeCIDRs{}, false
	}
	c, ok := decodeCIDRs(watchedPath(stateDir, node), node)
	if !ok || !watchLive(lock) {
		return podcidr.NodeCIDRs{}, false
	}
	now, err := boottime.Now()
	if age := now - time.Duration(c.ConfirmedAt); err != nil || age < 0 || age > PodCIDRMaxAge {
		return podcidr.NodeCIDRs{}, false
	}
	return c.NodeCIDRs, true
}

// watchLive tells whether another open file holds an exclusive lock on path.
func watchLive(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		_ = unix.Flock(fd, unix.LOCK_UN)
		return false
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

func decodeCIDRs(path, node string) (watchedCopy, bool) {
	var c watchedCopy
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Node != node || c.UID == "" || (c.CIDRs.V4 == "" && c.CIDRs.V6 == "") {
		return watchedCopy{}, false
	}
	return c, true
}

// Publisher is the sidecar's side of WatchedPodCIDRs, for one node.
type Publisher struct {
	stateDir, node string
	mu             sync.Mutex
	lock           *os.File // held while published
	last           podcidr.NodeCIDRs
}

// NewPodCIDRPublisher removes a copy left by an earlier sidecar; it takes the lock
// on the first Publish.
func NewPodCIDRPublisher(stateDir, node string) (*Publisher, error) {
	p := &Publisher{stateDir: stateDir, node: node}
	if err := os.MkdirAll(filepath.Dir(watchedPath(stateDir, node)), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create the podCIDRs directory: %w", err)
	}
	return p, p.Withdraw()
}

// Publish holds the lock and writes the Node's podCIDRs, confirmed now
// (a watch event). It fails while another sidecar (say, during a rolling
// update) holds the lock.
func (p *Publisher) Publish(c podcidr.NodeCIDRs) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.hold(); err != nil {
		return err
	}
	return p.write(c)
}

// Touch confirms the published copy (a watch bookmark: nothing changed up
// to the server's current version); nothing when none is published.
func (p *Publisher) Touch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock == nil || p.last == (podcidr.NodeCIDRs{}) {
		return nil
	}
	return p.write(p.last)
}

func (p *Publisher) write(c podcidr.NodeCIDRs) error {
	now, err := boottime.Now()
	if err != nil {
		return err
	}
	b, err := json.Marshal(watchedCopy{NodeCIDRs: c, ConfirmedAt: int64(now)})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(watchedPath(p.stateDir, p.node), b, 0o600); err != nil {
		return fmt.Errorf("failed to publish the node's podCIDRs: %w", err)
	}
	p.last = c
	return nil
}

// hold takes the lock. Plugins hold it shared for microseconds; a holder
// that keeps it for a second is another sidecar.
func (p *Publisher) hold() error {
	if p.lock != nil {
		return nil
	}
	f, err := os.OpenFile(watchLockPath(p.stateDir, p.node), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("failed to open the watch lock: %w", err)
	}
	for range 100 {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("failed to take the watch lock %s (held by another sidecar?): %w", f.Name(), err)
	}
	p.lock = f
	return nil
}

// Withdraw removes the copy (the Node is gone or has no podCIDRs); the
// plugins read the Node themselves meanwhile.
func (p *Publisher) Withdraw() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.withdraw()
}

func (p *Publisher) withdraw() error {
	p.last = podcidr.NodeCIDRs{}
	if err := os.Remove(watchedPath(p.stateDir, p.node)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to withdraw the node's podCIDRs: %w", err)
	}
	return nil
}

// Close withdraws the copy and releases the lock: the watch has ended.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.withdraw()
	if p.lock != nil {
		_ = p.lock.Close() // releases the flock
		p.lock = nil
	}
	return err
}
