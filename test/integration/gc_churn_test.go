package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// TestGCNeverTakesALiveSandbox runs GC back to back, as install-cni's
// reclaimer does, with the runtime's view of the node (the sandboxes whose
// ADD had returned when the list was taken) while hundreds of sandboxes are
// added and deleted, some forgotten without a DEL, and batches of stale
// leases keep every pass busy. No live sandbox may ever lose its host veth,
// its lease or its connectivity; everything forgotten is collected.
func TestGCNeverTakesALiveSandbox(t *testing.T) {
	const (
		workers   = 4
		perWorker = 60
		grace     = 3 // seconds
		ghosts    = 40
	)
	e := newEnv(t, "10.199.0.0/23")
	ctx := context.Background()
	anchor := e.newPod("anchor", false)
	e.add(anchor)

	var mu sync.Mutex
	listed := map[string]bool{anchor.ContainerID: true} // the runtime's sandboxes
	var forgotten []*pod
	snapshot := func() []string {
		mu.Lock()
		defer mu.Unlock()
		ids := make([]string, 0, len(listed))
		for id := range listed {
			ids = append(ids, id)
		}
		return ids
	}
	gc := func() error {
		ids := snapshot()
		valid := make([]types.GCAttachment, 0, len(ids))
		for _, id := range ids {
			valid = append(valid, types.GCAttachment{ContainerID: id, IfName: "eth0"})
		}
		r := e.statusOrGC("GC", map[string]any{"cni.dev/valid-attachments": valid,
			"kdd-cni.dev/valid-sandboxes": ids, "kdd-cni.dev/gc-grace-seconds": grace})
		return r.Err
	}

	// GC back to back, reseeding a batch of stale leases (old by their
	// mtime) whenever the last batch is gone.
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	passes, seeded := 0, 0
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !e.hasGhosts() && seeded < 6 {
				e.seedGhosts(t, ghosts, seeded)
				seeded++
			}
			if err := gc(); err != nil {
				t.Errorf("GC pass %d: %v", passes, err)
			}
			passes++
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if !e.churnOne(t, ctx, anchor, fmt.Sprintf("w%d-%d", w, i), i%10 == 9, func(p *pod, live bool) {
					mu.Lock()
					defer mu.Unlock()
					switch {
					case live:
						listed[p.ContainerID] = true
					default:
						delete(listed, p.ContainerID)
					}
				}, func(p *pod) {
					mu.Lock()
					defer mu.Unlock()
					forgotten = append(forgotten, p)
				}) {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-gcDone
	t.Logf("%d sandboxes, %d forgotten, %d GC passes, %d batches of %d stale leases", workers*perWorker, len(forgotten), passes, seeded, ghosts)
	if passes < 10 || seeded < 2 {
		t.Errorf("GC ran %d passes and collected %d batches during the churn: too few to prove anything", passes, seeded)
	}

	// Everything forgotten is collected by passes a grace period apart.
	for range 3 {
		if err := gc(); err != nil {
			t.Fatalf("GC: %v", err)
		}
		time.Sleep(grace*time.Second + 100*time.Millisecond)
	}
	if err := gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	owners := e.leases()
	if len(owners) != 1 {
		t.Errorf("leases after the churn: %d, want only the anchor's: %v", len(owners), owners)
	}
	for _, p := range forgotten {
		if linkExists(t, p.HostVeth) {
			t.Errorf("forgotten sandbox %s kept its host veth", p.Name)
		}
	}
	if r := e.check(anchor); r.Err != nil {
		t.Errorf("the anchor sandbox, listed throughout, broken by GC: %v", r.Err)
	}
	e.del(anchor)
}

// churnOne adds a sandbox, proves it whole (CHECK, its lease, a ping from
// the anchor) for a while, then deletes it, or forgets it (no DEL, still
// running: its lease and host veth leak). listed tells the runtime's list.
func (e *env) churnOne(t *testing.T, ctx context.Context, anchor *pod, name string, forget bool,
	listed func(*pod, bool), forgotten func(*pod)) bool {
	if _, err := cluster.CreatePod(ctx, e.ns, name, e.node); err != nil {
		t.Errorf("create pod %s: %v", name, err)
		return false
	}
	ns, err := harness.NewNetNS("pod")
	if err != nil {
		t.Errorf("netns: %v", err)
		return false
	}
	t.Cleanup(func() { _ = ns.Close() })
	p := &pod{Namespace: e.ns, Name: name, ContainerID: fmt.Sprintf("%s-%s-%d", e.ns, name, seq.Add(1)), Netns: ns, HostVeth: naming.HostVeth("cali", e.ns, name)}
	r := e.call("ADD", p, e.conf())
	if r.Err != nil {
		t.Errorf("ADD %s: %v", name, r.Err)
		return false
	}
	listed(p, true)
	if err := p.SetResult(e.conf(), r.Stdout); err != nil {
		t.Errorf("ADD %s result: %v", name, err)
		return false
	}
	for range 2 {
		if r := e.check(p); r.Err != nil {
			t.Errorf("live sandbox %s broken: CHECK: %v", name, r.Err)
		}
		if owners := e.leases(); !slices.Contains(mapValues(owners), p.ContainerID) {
			t.Errorf("live sandbox %s lost its lease", name)
		}
		if err := anchor.Netns.Ping(p.IPs()[0], 2*time.Second); err != nil {
			t.Errorf("live sandbox %s unreachable: %v", name, err)
		}
	}
	if t.Failed() {
		return false
	}
	if forget {
		listed(p, false)
		forgotten(p)
		return true
	}
	if r := e.call("DEL", p, e.conf()); r.Err != nil {
		t.Errorf("DEL %s: %v", name, r.Err)
	}
	listed(p, false)
	_ = ns.Close()
	return true
}

// seedGhosts writes n leases of sandboxes no runtime knows, old by their
// mtime, as host-local does (created exclusively, so a live lease is never
// overwritten).
func (e *env) seedGhosts(t *testing.T, n, round int) {
	dir := filepath.Join(e.dataDir, networkName)
	_ = os.MkdirAll(dir, 0o755)
	old := time.Now().Add(-time.Hour)
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("10.199.1.%d", 100+i))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			continue
		}
		_, _ = fmt.Fprintf(f, "ghost-%d-%d\r\neth0", round, i)
		_ = f.Close()
		_ = os.Chtimes(path, old, old)
	}
}

func (e *env) hasGhosts() bool {
	for _, owner := range e.leases() {
		if len(owner) > 6 && owner[:6] == "ghost-" {
			return true
		}
	}
	return false
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
