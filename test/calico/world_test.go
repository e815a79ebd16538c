package calico

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

const (
	network = "k8s-pod-network"
	podNS   = "policy"
	nodeV4  = "10.244.7.0/24"
	nodeV6  = "fd00:244:7::/64"
)

// world is one node: a control plane in its own namespace, Calico's CRDs,
// a Node with podCIDRs and (optionally) Felix.
type world struct {
	t          *testing.T
	cp         *harness.ControlPlane
	node       string
	cniKubecfg string
	binDir     string
	calico     string // the pinned Calico build
	dataDir    string // host-local's
	dual       bool
	felix      *harness.Felix
	statusPfx  string
}

var seq atomic.Int64

func newWorld(t *testing.T, dual bool) *world {
	t.Helper()
	harness.RequireRoot(t)
	calico, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := harness.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cp := harness.StartT(t, harness.Options{})
	if err := cp.AddUplink(); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, cp: cp, node: "node-1", binDir: bin, calico: calico, dataDir: t.TempDir(), dual: dual,
		statusPfx: t.TempDir(), cniKubecfg: filepath.Join(cp.Dir, "cni.kubeconfig")}
	ctx := context.Background()
	if err := cp.CNIKubeconfig(ctx, w.cniKubecfg, 3600); err != nil {
		t.Fatal(err)
	}
	if err := cp.InstallCalicoCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	cidrs := []string{nodeV4}
	if dual {
		cidrs = append(cidrs, nodeV6)
	}
	if _, err := cp.CreateNode(ctx, w.node, cidrs...); err != nil {
		t.Fatal(err)
	}
	if err := cp.CreateNamespace(ctx, podNS); err != nil {
		t.Fatal(err)
	}
	return w
}

// startFelix starts Felix for the node (iptables for v4, nftables for dual).
func (w *world) startFelix() {
	w.t.Helper()
	f, err := w.cp.StartFelix(context.Background(), w.calico, harness.FelixOptions{
		Node: w.node, IPv6: w.dual, NFTables: w.dual, StatusPrefix: w.statusPfx,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.felix = f
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("felix log:\n%s", f.Tail(6000))
		}
	})
}

// pod is one sandbox networked by a plugin (the harness's fixture, shared
// with the integration and faults suites).
type pod = harness.Sandbox

func (w *world) newPod(name string) *pod {
	w.t.Helper()
	if _, err := w.cp.CreatePod(context.Background(), podNS, name, w.node); err != nil {
		w.t.Fatal(err)
	}
	return &pod{Namespace: podNS, Name: name, ContainerID: fmt.Sprintf("%s-%d", name, seq.Add(1)),
		Netns: harness.NewNetNST(w.t, "pod"), HostVeth: naming.HostVeth("cali", podNS, name)}
}

// ours is kdd-cni's calico binary as the shipped conflist configures it.
func (w *world) ours(extra map[string]any) harness.Plugin {
	c := harness.NetConf{Version: "1.0.0", Name: network, Node: w.node, Kubeconfig: w.cniKubecfg,
		StateDir: filepath.Join(w.dataDir, "state"), LogFile: filepath.Join(w.dataDir, "kdd-cni.log"),
		IPAM: w.ipam(), Extra: extra}.JSON()
	return harness.Plugin{Name: "kdd-cni", Binary: filepath.Join(w.binDir, "calico"), Path: w.binDir, Conf: c}
}

// theirs is Calico's own calico binary, configured as Calico's policy-only
// manifest does (plus nodename_file_optional, as calico-node is absent), as
// an identity with the wider rights it needs (ClusterInformation).
func (w *world) theirs() harness.Plugin {
	c, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": network, "type": "calico", "log_level": "debug",
		"log_file_path": filepath.Join(w.dataDir, "calico.log"), "datastore_type": "kubernetes",
		"nodename": w.node, "nodename_file_optional": true, "mtu": 1500,
		"ipam": w.ipam(), "policy": map[string]any{"type": "k8s"},
		"kubernetes": map[string]any{"kubeconfig": w.cp.AdminKubeconfig},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return harness.Plugin{Name: "calico", Binary: filepath.Join(w.calico, "calico"), Path: w.binDir, Conf: c}
}

func (w *world) ipam() map[string]any {
	ranges := []any{[]any{map[string]any{"subnet": "usePodCidr"}}}
	if w.dual {
		ranges = append(ranges, []any{map[string]any{"subnet": "usePodCidrIPv6"}})
	}
	return map[string]any{"type": "host-local", "ranges": ranges, "dataDir": w.dataDir}
}

func (w *world) add(pl harness.Plugin, p *pod) {
	w.t.Helper()
	if err := w.cp.Add(context.Background(), pl, p); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) check(pl harness.Plugin, p *pod) error {
	return w.cp.Check(context.Background(), pl, p).Err
}

func (w *world) del(pl harness.Plugin, p *pod) {
	w.t.Helper()
	if err := w.cp.Del(context.Background(), pl, p); err != nil {
		w.t.Fatal(err)
	}
}

// endpointStatus is what Felix writes for an endpoint that is up.
type endpointStatus struct {
	IfaceName string   `json:"ifaceName"`
	Mac       string   `json:"mac"`
	IPv4Nets  []string `json:"ipv4Nets"`
	IPv6Nets  []string `json:"ipv6Nets"`
}

func statusFile(p *pod) string { return harness.FelixStatusFile(podNS, p.Name) }

// waitEndpointUp waits for Felix's status file of p and returns it.
func (w *world) waitEndpointUp(p *pod) endpointStatus {
	w.t.Helper()
	path := filepath.Join(w.felix.StatusDir(), statusFile(p))
	var st endpointStatus
	if err := eventually(15*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &st)
	}); err != nil {
		w.t.Fatalf("Felix never reported %s up: %v", p.Name, err)
	}
	return st
}

// waitEndpointGone waits for Felix to drop p's status file.
func (w *world) waitEndpointGone(p *pod) {
	w.t.Helper()
	path := filepath.Join(w.felix.StatusDir(), statusFile(p))
	if err := eventually(15*time.Second, func() error {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("status file still there (%v)", err)
		}
		return nil
	}); err != nil {
		w.t.Fatalf("Felix kept endpoint %s: %v", p.Name, err)
	}
}

func eventually(timeout time.Duration, fn func() error) error {
	return harness.Poll(timeout, 100*time.Millisecond, fn)
}

// rules dumps the node's netfilter state as Felix programmed it, counters
// stripped.
func (w *world) rules() string {
	w.t.Helper()
	var out []byte
	if err := w.cp.DoInNode(func() error {
		var err error
		if w.dual {
			out, err = exec.Command("nft", "list", "ruleset").Output()
		} else {
			out, err = exec.Command("iptables-save").Output()
		}
		return err
	}); err != nil {
		w.t.Fatal(err)
	}
	counters := regexp.MustCompile(`\[\d+:\d+\]|counter packets \d+ bytes \d+|^#.*$`)
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(counters.ReplaceAllString(l, ""))
		if l != "" {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (w *world) deletePod(name string, grace int64) {
	w.t.Helper()
	if err := w.cp.Admin.CoreV1().Pods(podNS).Delete(context.Background(), name,
		metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) podObject(name string) *corev1.Pod {
	w.t.Helper()
	p, err := w.cp.Admin.CoreV1().Pods(podNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// newPodNamed creates a pod whose app label differs from its name.
func (w *world) newPodNamed(name, app string) *pod {
	w.t.Helper()
	p := w.newPod(name)
	obj := w.podObject(name)
	obj.Labels = map[string]string{"app": app}
	if _, err := w.cp.Admin.CoreV1().Pods(podNS).Update(context.Background(), obj, metav1.UpdateOptions{}); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func splitLines(s string) []string { return strings.Split(s, "\n") }
func joinLines(l []string) string  { return strings.Join(l, "\n") }

// linkGone fails if a link of that name exists (in the caller's namespace).
func linkGone(name string) error {
	if _, err := netlink.LinkByName(name); err == nil {
		return fmt.Errorf("link %s still exists", name)
	}
	return nil
}
