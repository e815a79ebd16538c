package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

const (
	namespace   = "faults"
	node        = "fault-node"
	networkName = "k8s-pod-network"
)

// sandbox is one pod sandbox as the runtime sees it (the harness's
// fixture, shared with the integration and calico suites).
type sandbox = harness.Sandbox

// addrs are the sandbox's addresses in CIDR form, from its ADD result.
func addrs(sb *sandbox) []string {
	var out []string
	if sb.Result != nil {
		for _, ip := range sb.Result.IPs {
			out = append(out, ip.Address.String())
		}
	}
	return out
}

// world is the runtime model: which sandbox of each pod is live.
type world struct {
	t          *testing.T
	rng        *rand.Rand
	kubeconfig string // the plugin's (through the fault proxy)
	dataDir    string
	stateDir   string
	podCIDR    *net.IPNet
	pods       []string
	live       map[string]*sandbox
	seq        int
	stats      map[string]*opStats
	panics     int
	delFailed  int // DELs that failed under a datastore fault: must stay 0
	addLeaks   int // failed ADDs that left a lease or link behind: must stay 0
	maxAdd     time.Duration
	slowAdds   int                 // ADDs beyond their bound: must stay 0
	history    map[string][]string // per sandbox: its commands and outcomes, for diagnosis
	historyMu  sync.Mutex
	badChecks  int // CHECKs of a live sandbox that failed: must stay 0
}

// addBound is ADD's bound (10 s, rollback included) plus process start-up.
const addBound = 10500 * time.Millisecond

// timedAdd checks ADD's bound on every ADD.
func (w *world) timedAdd(sb *sandbox, r result) {
	w.maxAdd = max(w.maxAdd, r.elapsed)
	if r.elapsed > addBound && !r.killed {
		w.slowAdds++
		w.t.Errorf("ADD of %s took %s, beyond its bound", sb.ContainerID, r.elapsed)
	}
}

type opStats struct{ ok, failed, killed int }

func (w *world) stat(op string) *opStats {
	if w.stats[op] == nil {
		w.stats[op] = &opStats{}
	}
	return w.stats[op]
}

func (w *world) plugin() harness.Plugin {
	return harness.Plugin{Name: "kdd-cni", Binary: filepath.Join(suite.BinDir, "calico"), Path: suite.BinDir, Conf: w.conf()}
}

func (w *world) conf() []byte {
	return harness.NetConf{Version: "1.1.0", Name: networkName, Node: node, Kubeconfig: w.kubeconfig,
		StateDir: w.stateDir, LogFile: filepath.Join(w.dataDir, "cni.log"),
		IPAM: map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": w.dataDir}}.JSON()
}

type result struct {
	err     error
	killed  bool
	stdout  []byte
	elapsed time.Duration
}

// exec runs one plugin command; killAfter > 0 sends SIGKILL after that long.
func (w *world) exec(cmd string, sb *sandbox, netnsPath string, killAfter time.Duration, conf []byte) result {
	call := sb.Call(w.plugin(), cmd, conf)
	call.Netns = netnsPath
	c := call.Cmd()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	start := time.Now()
	if err := suite.CP.StartCmd(c); err != nil {
		w.t.Fatal(err)
	}
	if killAfter > 0 {
		timer := time.AfterFunc(killAfter, func() { _ = c.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := c.Wait()
	r := result{err: err, stdout: out.Bytes(), elapsed: time.Since(start)}
	w.record(sb.ContainerID, cmd, killAfter, r, &out)
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		r.killed = true
	}
	if bytes.Contains(errb.Bytes(), []byte("panic:")) || bytes.Contains(out.Bytes(), []byte("goroutine ")) {
		w.panics++
		w.t.Errorf("plugin panicked: %s %s", out.String(), errb.String())
	}
	return r
}

// record notes a command's outcome in the sandbox's history.
func (w *world) record(id, cmd string, killAfter time.Duration, r result, out *bytes.Buffer) {
	if w.history == nil {
		w.history = map[string][]string{}
	}
	outcome := "ok"
	if r.err != nil {
		outcome = "err " + strings.TrimSpace(out.String())
		if len(outcome) > 160 {
			outcome = outcome[:160]
		}
	}
	w.historyMu.Lock()
	defer w.historyMu.Unlock()
	w.history[id] = append(w.history[id], fmt.Sprintf("%s(kill %s, %s): %s", cmd, killAfter, r.elapsed.Round(time.Millisecond), outcome))
}

func (w *world) newSandbox(pod string) *sandbox {
	w.seq++
	ns, err := harness.NewNetNS("f")
	if err != nil {
		w.t.Fatal(err)
	}
	return &sandbox{Namespace: namespace, Name: pod, ContainerID: fmt.Sprintf("sb%05d%x", w.seq, w.rng.Uint32()), Netns: ns}
}

func (w *world) netnsPath(sb *sandbox) string {
	if sb.Netns == nil {
		return "/run/netns/gone-" + sb.ContainerID
	}
	return sb.Netns.Path
}

// add runs ADD as a runtime does: on failure (or kill) it DELs the sandbox.
func (w *world) add(sb *sandbox, kill bool) bool {
	var killAfter time.Duration
	if kill {
		killAfter = time.Duration(w.rng.IntN(40)) * time.Millisecond
	}
	r := w.exec("ADD", sb, w.netnsPath(sb), killAfter, w.conf())
	w.timedAdd(sb, r)
	switch {
	case r.killed:
		w.stat("ADD").killed++
	case r.err != nil:
		w.stat("ADD").failed++
		w.checkNothingOf(sb)
	default:
		w.stat("ADD").ok++
		if err := sb.SetResult(w.conf(), r.stdout); err != nil {
			w.t.Fatal(err)
		}
		return true
	}
	w.delUntilDone(sb, false)
	return false
}

// checkNothingOf: a failed (not killed) ADD leaves no lease and no link.
func (w *world) checkNothingOf(sb *sandbox) {
	for _, owner := range w.leases() {
		if owner == sb.ContainerID {
			w.addLeaks++
			w.t.Errorf("failed ADD of %s left a lease", sb.ContainerID)
		}
	}
	for _, l := range w.caliLinks() {
		if _, id, _, _ := naming.ParseHostVethAlias(l.Attrs().Alias); id == sb.ContainerID {
			w.addLeaks++
			w.t.Errorf("failed ADD of %s left link %s", sb.ContainerID, l.Attrs().Name)
		}
	}
}

// del runs DEL once; kill sends SIGKILL at a random point.
func (w *world) del(sb *sandbox, kill bool) (ok bool) {
	var killAfter time.Duration
	if kill {
		killAfter = time.Duration(w.rng.IntN(30)) * time.Millisecond
	}
	r := w.exec("DEL", sb, w.netnsPath(sb), killAfter, w.conf())
	switch {
	case r.killed:
		w.stat("DEL").killed++
		return false
	case r.err != nil:
		w.stat("DEL").failed++
		w.delFailed++
		w.t.Errorf("DEL of %s failed: %v %s", sb.ContainerID, r.err, r.stdout)
		return false
	}
	w.stat("DEL").ok++
	return true
}

// delUntilDone is the runtime retrying DEL until it succeeds, then removing
// the sandbox's netns.
func (w *world) delUntilDone(sb *sandbox, kill bool) {
	for i := 0; !w.del(sb, kill && i == 0); i++ {
		if i > 5 {
			w.t.Fatalf("DEL of %s never succeeded", sb.ContainerID)
		}
	}
	if sb.Netns != nil {
		_ = sb.Netns.Close()
		sb.Netns = nil
	}
}

// cycle does one random runtime operation on one random pod.
func (w *world) cycle() {
	pod := w.pods[w.rng.IntN(len(w.pods))]
	cur := w.live[pod]
	r := w.rng.Float64()
	switch {
	case cur == nil && r < 0.7, cur != nil && r < 0.15: // new sandbox (replaces the live one)
		sb := w.newSandbox(pod)
		if w.add(sb, false) {
			w.live[pod] = sb
			if cur != nil {
				w.delUntilDone(cur, false) // the old sandbox's (stale) DEL
			}
		}
	case cur == nil && r < 0.85: // ADD killed at a random point (it may finish first)
		if sb := w.newSandbox(pod); w.add(sb, true) {
			w.live[pod] = sb
		}
	case cur == nil: // concurrent ADDs of the same pod
		w.concurrentAdds(pod)
	case r < 0.55: // DEL
		w.delUntilDone(cur, false)
		delete(w.live, pod)
	case r < 0.65: // netns deleted before DEL
		_ = cur.Netns.Close()
		cur.Netns = nil
		w.delUntilDone(cur, false)
		delete(w.live, pod)
	case r < 0.75: // DEL killed, then retried
		w.delUntilDone(cur, true)
		delete(w.live, pod)
	case r < 0.85: // duplicate DEL of a dead sandbox (stale)
		w.del(&sandbox{Namespace: namespace, Name: pod, ContainerID: fmt.Sprintf("dead%05d", w.rng.IntN(w.seq+1))}, false)
	default: // CHECK with the datastore in whatever state: it reads none
		if r := w.exec("CHECK", cur, w.netnsPath(cur), 0, w.withPrev(cur)); r.err != nil {
			w.stat("CHECK").failed++
			w.badChecks++
			w.t.Errorf("CHECK of live sandbox %s failed: %v %s", cur.ContainerID, r.err, r.stdout)
		} else {
			w.stat("CHECK").ok++
		}
	}
}

func (w *world) withPrev(sb *sandbox) []byte {
	b, err := harness.WithPrevResult(w.conf(), sb.Raw)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// concurrentAdds starts two sandboxes of one pod at once; the runtime keeps
// the one that finished last and DELs the other.
func (w *world) concurrentAdds(pod string) {
	a, b := w.newSandbox(pod), w.newSandbox(pod)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var order []*sandbox
	okA, okB := false, false
	for _, sb := range []*sandbox{a, b} {
		wg.Add(1)
		go func(sb *sandbox) {
			defer wg.Done()
			r := w.exec("ADD", sb, w.netnsPath(sb), 0, w.conf())
			mu.Lock()
			defer mu.Unlock()
			w.timedAdd(sb, r)
			if r.err == nil {
				if err := sb.SetResult(w.conf(), r.stdout); err != nil {
					w.t.Error(err)
				}
				order = append(order, sb)
				if sb == a {
					okA = true
				} else {
					okB = true
				}
			}
		}(sb)
	}
	wg.Wait()
	w.stat("ADD-concurrent").ok += len(order)
	w.stat("ADD-concurrent").failed += 2 - len(order)
	if !okA && !okB {
		w.delUntilDone(a, false)
		w.delUntilDone(b, false)
		return
	}
	// The pod's network is the one the kernel has: the sandbox whose ADD
	// ran last under the pod lock owns the host veth (its alias). The one
	// whose process exited last may be the other, on a busy machine.
	winner := order[len(order)-1]
	if owner := w.vethOwner(pod); owner == a.ContainerID && okA {
		winner = a
	} else if owner == b.ContainerID && okB {
		winner = b
	}
	for _, sb := range []*sandbox{a, b} {
		if sb != winner {
			w.delUntilDone(sb, false)
		}
	}
	w.live[pod] = winner
}

// vethOwner is the container ID in the pod's host veth alias ("" if none).
func (w *world) vethOwner(pod string) string {
	name := naming.HostVeth("cali", namespace, pod)
	for _, l := range w.caliLinks() {
		if l.Attrs().Name == name {
			_, id, _, _ := naming.ParseHostVethAlias(l.Attrs().Alias)
			return id
		}
	}
	return ""
}

func (w *world) leases() map[string]string { return harness.HostLocalLeases(w.dataDir, networkName) }

func (w *world) caliLinks() []netlink.Link {
	var out []netlink.Link
	_ = suite.CP.DoInNode(func() error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "cali") {
				out = append(out, l)
			}
		}
		return err
	})
	return out
}

// figures are the invariant counts, taken before any GC; all must be 0.
// GCLeases and GCLinks are what the runtime's GC then still found to
// collect: 0 too, since every leak must be prevented by DEL itself.
type figures struct {
	LeakedLeases, MissingLeases, StrayLinks, MissingLinks, StrayRoutes, BadAnnotations, Journal int
	GCLeases, GCLinks                                                                           int
}

// check compares the kernel, host-local and the apiserver with the model.
func (w *world) check() figures {
	var f figures
	liveIDs := map[string]*sandbox{}
	for _, sb := range w.live {
		liveIDs[sb.ContainerID] = sb
	}
	leases := w.leases()
	held := map[string]int{}
	for ip, id := range leases {
		if liveIDs[id] == nil {
			f.LeakedLeases++
			w.t.Errorf("leaked lease %s of %s; its history: %v", ip, id, w.history[id])
		}
		held[id]++
	}
	for id, sb := range liveIDs {
		if held[id] != len(addrs(sb)) {
			f.MissingLeases++
			w.t.Errorf("live sandbox %s holds %d leases for %v", id, held[id], addrs(sb))
		}
	}
	seen := map[string]bool{}
	for _, l := range w.caliLinks() {
		_, id, _, _ := naming.ParseHostVethAlias(l.Attrs().Alias)
		sb := liveIDs[id]
		if sb == nil || naming.HostVeth("cali", namespace, sb.Name) != l.Attrs().Name {
			f.StrayLinks++
			w.t.Errorf("stray link %s (alias %q)", l.Attrs().Name, l.Attrs().Alias)
			continue
		}
		seen[id] = true
	}
	for id := range liveIDs {
		if !seen[id] {
			f.MissingLinks++
			w.t.Errorf("live sandbox %s has no host veth", id)
		}
	}
	liveIPs := map[string]bool{}
	for _, sb := range liveIDs {
		for _, ip := range addrs(sb) {
			liveIPs[ip] = true
		}
	}
	_ = suite.CP.DoInNode(func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && w.podCIDR.Contains(r.Dst.IP) && !liveIPs[r.Dst.String()] {
				f.StrayRoutes++
				w.t.Errorf("stray host route %s", r.Dst)
			}
		}
		return err
	})
	ctx := context.Background()
	for _, pod := range w.pods {
		p, err := suite.CP.Admin.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			w.t.Fatal(err)
		}
		a := p.Annotations
		if sb := w.live[pod]; sb != nil {
			if a["cni.projectcalico.org/containerID"] != sb.ContainerID || a["cni.projectcalico.org/podIPs"] != strings.Join(addrs(sb), ",") {
				f.BadAnnotations++
				w.t.Errorf("pod %s annotations %v, live sandbox %s %v", pod, a, sb.ContainerID, addrs(sb))
			}
		} else if a["cni.projectcalico.org/podIP"] != "" {
			f.BadAnnotations++
			w.t.Errorf("pod %s has no live sandbox but podIP %q", pod, a["cni.projectcalico.org/podIP"])
		}
	}
	entries, _ := filepath.Glob(filepath.Join(w.stateDir, "journal", "*.json"))
	if f.Journal = len(entries); f.Journal != 0 {
		w.t.Errorf("%d journal entries left after healing", f.Journal)
	}
	return f
}

// settle clears faults and lets the journal replay (deferred clears
// become due; STATUS, like any invocation, replays), then counts every
// invariant before anything heals, and only then runs GC with the live
// sandboxes, as a runtime does periodically, counting what it collected.
func (w *world) settle(proxy *harness.FaultProxy) figures {
	proxy.Set(harness.Fault{})
	time.Sleep(3500 * time.Millisecond) // deferred clears and reasserts become due
	if r := w.exec("STATUS", &sandbox{}, "", 0, w.conf()); r.err != nil {
		w.t.Errorf("STATUS after clearing the faults: %v %s", r.err, r.stdout)
	}
	f := w.check()
	leases, links := len(w.leases()), len(w.caliLinks())
	var valid []map[string]string
	for _, sb := range w.live {
		valid = append(valid, map[string]string{"containerID": sb.ContainerID, "ifname": "eth0"})
	}
	var c map[string]any
	_ = json.Unmarshal(w.conf(), &c)
	c["cni.dev/valid-attachments"] = valid
	b, _ := json.Marshal(c)
	if r := w.exec("GC", &sandbox{}, "", 0, b); r.err != nil {
		w.t.Errorf("GC: %v %s", r.err, r.stdout)
	}
	f.GCLeases, f.GCLinks = leases-len(w.leases()), links-len(w.caliLinks())
	if f.GCLeases != 0 || f.GCLinks != 0 {
		w.t.Errorf("GC had to collect %d leases and %d links that DEL should have released", f.GCLeases, f.GCLinks)
	}
	return f
}

func (w *world) report(phase string, f figures, proxy *harness.FaultProxy) {
	var ops []string
	for k := range w.stats {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n| op | ok | failed | killed |\n|---|---|---|---|\n", phase)
	for _, k := range ops {
		s := w.stats[k]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", k, s.ok, s.failed, s.killed)
	}
	fmt.Fprintf(&b, "faults met by API requests: %v\n", proxy.Counts())
	fmt.Fprintf(&b, "invariants before GC: leaked leases %d, missing leases %d, stray cali links %d, missing links %d, stray host routes %d, "+
		"pods with wrong annotations %d, journal left %d, DEL failures %d, failed-ADD leftovers %d, failed CHECKs %d, ADDs beyond the bound %d, panics %d; slowest ADD %s\n"+
		"collected afterwards by GC: leases %d, links %d\n",
		f.LeakedLeases, f.MissingLeases, f.StrayLinks, f.MissingLinks, f.StrayRoutes, f.BadAnnotations, f.Journal,
		w.delFailed, w.addLeaks, w.badChecks, w.slowAdds, w.panics, w.maxAdd.Round(time.Millisecond), f.GCLeases, f.GCLinks)
	w.t.Log(b.String())
}
