// Package sweep decides, across GC passes, when an attachment found stale
// may be collected: mark and sweep on the kernel's monotonic clock.
//
// A runtime's list of valid attachments is a snapshot: an ADD that starts
// after it was taken owns a lease and a host veth the list cannot name. A
// GC that collected everything the list leaves out would take them from a
// live pod. With a grace period, an attachment is collected only when every
// pass over at least that long found it stale: the first pass that finds it
// marks it with the time, any pass that finds it valid (or gone) drops the
// mark, and a pass at least the grace period after the mark collects it. A
// live sandbox is in the runtime's list well within the grace period, so it
// is never collected, however the passes and its ADD interleave.
//
// Time is CLOCK_BOOTTIME, which wall-clock steps do not move; marks of an
// earlier boot are dropped. Without a grace period the list is trusted as
// the CNI spec has it, and what it leaves out is collected at once.
package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/boottime"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// Ledger is the pure part: the marks and the rule. Times are monotonic.
type Ledger struct {
	Grace time.Duration
	// Marks are the attachments found stale, each with the time of the
	// first pass of an unbroken run of passes that found it stale.
	Marks map[types.GCAttachment]time.Duration
	seen  map[types.GCAttachment]bool
}

// Stale records that this pass, at now, found a stale and reports whether
// it may be collected now. It may be asked more than once in a pass (a
// lease and a host veth of one attachment).
func (l *Ledger) Stale(a types.GCAttachment, now time.Duration) bool {
	if l.seen == nil {
		l.seen = map[types.GCAttachment]bool{}
	}
	if l.Marks == nil {
		l.Marks = map[types.GCAttachment]time.Duration{}
	}
	l.seen[a] = true
	if l.Grace <= 0 {
		return true
	}
	first, ok := l.Marks[a]
	if !ok {
		l.Marks[a] = now
		return false
	}
	return now-first >= l.Grace
}

// Close drops the marks of attachments this pass did not find stale: valid
// again, or gone.
func (l *Ledger) Close() {
	for a := range l.Marks {
		if !l.seen[a] {
			delete(l.Marks, a)
		}
	}
	l.seen = nil
}

// Pass is one GC pass of a network, holding the network's GC lock: passes
// of one network never interleave.
type Pass struct {
	Ledger
	path string
	boot string
	now  time.Duration
	lock *nodestate.Lock
}

// record is the marks file: the boot it belongs to and, per attachment
// ("containerID/ifname"), the monotonic nanoseconds of its mark.
type record struct {
	Boot  string           `json:"boot"`
	Marks map[string]int64 `json:"marks"`
}

// Begin takes the GC lock of network (owner names the plugin keeping the
// marks, so calico and the podcidr shim under it keep their own) in
// locks and loads its marks from dir.
func Begin(ctx context.Context, dir string, locks nodestate.Locks, network, owner string, grace time.Duration) (*Pass, error) {
	now, err := boottime.Now()
	if err != nil {
		return nil, err
	}
	name := "gc-" + owner + "-" + network
	lock, err := locks.Acquire(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("failed to take the GC lock of %s: %w", network, err)
	}
	p := &Pass{Ledger: Ledger{Grace: grace}, path: filepath.Join(dir, name+".json"), now: now, lock: lock}
	if p.boot, err = bootID(); err != nil {
		lock.Release()
		return nil, err
	}
	if err := p.load(); err != nil {
		lock.Release()
		return nil, err
	}
	return p, nil
}

// Due records a stale attachment and reports whether it may be collected.
func (p *Pass) Due(a types.GCAttachment) bool { return p.Stale(a, p.now) }

// End drops the marks this pass did not renew, saves the rest and releases
// the lock.
func (p *Pass) End() error {
	defer p.lock.Release()
	p.Close()
	rec := record{Boot: p.boot, Marks: map[string]int64{}}
	for a, t := range p.Marks {
		rec.Marks[a.ContainerID+"/"+a.IfName] = int64(t)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", filepath.Dir(p.path), err)
	}
	if err := atomicfile.Write(p.path, b, 0o600); err != nil {
		return fmt.Errorf("failed to save GC marks: %w", err)
	}
	return nil
}

// load reads the marks; a missing or torn file, or one of another boot,
// holds none: starting over only delays collection by a grace period.
func (p *Pass) load() error {
	b, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to read GC marks: %w", err)
	}
	var rec record
	if json.Unmarshal(b, &rec) != nil || rec.Boot != p.boot {
		return nil
	}
	p.Marks = map[types.GCAttachment]time.Duration{}
	for k, t := range rec.Marks {
		id, ifName, _ := strings.Cut(k, "/")
		p.Marks[types.GCAttachment{ContainerID: id, IfName: ifName}] = time.Duration(t)
	}
	return nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("failed to read the boot ID: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}
