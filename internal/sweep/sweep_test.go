package sweep

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

var a, b = types.GCAttachment{ContainerID: "a", IfName: "eth0"}, types.GCAttachment{ContainerID: "b", IfName: "eth0"}

func TestLedgerCollectsOnlyWhatStayedStale(t *testing.T) {
	l := Ledger{Grace: 10 * time.Second}
	pass := func(now time.Duration, stale ...types.GCAttachment) map[types.GCAttachment]bool {
		due := map[types.GCAttachment]bool{}
		for _, x := range stale {
			due[x] = l.Stale(x, now)
		}
		l.Close()
		return due
	}
	if d := pass(0, a, b); d[a] || d[b] {
		t.Fatalf("first pass collected: %v", d)
	}
	// b is valid (or gone) in a pass between: its mark is dropped.
	if d := pass(5*time.Second, a); d[a] {
		t.Fatalf("collected before the grace: %v", d)
	}
	d := pass(10*time.Second, a, b)
	if !d[a] {
		t.Error("a, stale in every pass for the grace period, not collected")
	}
	if d[b] {
		t.Error("b was valid in a pass between and still collected")
	}
	if !pass(20*time.Second, b)[b] {
		t.Error("b, stale again for the grace period, not collected")
	}
}

func TestLedgerWithoutGraceTrustsTheList(t *testing.T) {
	l := Ledger{}
	if !l.Stale(a, 0) {
		t.Error("without a grace period a stale attachment is collected at once")
	}
	l.Close()
	if len(l.Marks) != 0 {
		t.Errorf("marks kept without a grace period: %v", l.Marks)
	}
}

// Marks persist across passes (processes) of one boot, under the lock.
func TestPassPersistsMarks(t *testing.T) {
	dir := t.TempDir()
	begin := func() *Pass {
		p, err := Begin(context.Background(), filepath.Join(dir, "gc"), nodestate.Locks(filepath.Join(dir, "locks")), "net", "calico", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := begin()
	if p.Due(a) {
		t.Fatal("first pass: due")
	}
	// A second pass while the first holds the lock waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Begin(ctx, filepath.Join(dir, "gc"), nodestate.Locks(filepath.Join(dir, "locks")), "net", "calico", time.Hour); err == nil {
		t.Fatal("two passes of one network at once")
	}
	if err := p.End(); err != nil {
		t.Fatal(err)
	}
	p = begin()
	if _, ok := p.Marks[a]; !ok || len(p.Marks) != 1 {
		t.Fatalf("marks after reload: %v", p.Marks)
	}
	if p.Due(a) {
		t.Fatal("due within the grace")
	}
	if err := p.End(); err != nil {
		t.Fatal(err)
	}
	// Marks of another boot are dropped.
	path := filepath.Join(dir, "gc", "gc-calico-net.json")
	if err := os.WriteFile(path, []byte(`{"boot":"other","marks":{"a/eth0":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p = begin()
	if len(p.Marks) != 0 {
		t.Errorf("marks of another boot kept: %v", p.Marks)
	}
	_ = p.End()
	if err := os.WriteFile(path, []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	p = begin()
	if len(p.Marks) != 0 || p.Due(a) {
		t.Errorf("a torn marks file: marks %v", p.Marks)
	}
	_ = p.End()
}
