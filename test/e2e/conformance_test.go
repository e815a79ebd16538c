package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// Kubernetes' sig-network Conformance specs: every [sig-network] spec
// tagged [Conformance] in test/e2e/network and test/e2e/common/network.
const (
	conformanceFocus = `\[sig-network\].*\[Conformance\]`
	conformanceSpecs = 47
)

// TestSigNetworkConformance runs Kubernetes' own sig-network Conformance
// specs (k8s.io/kubernetes v1.37.2), the bar a certified cluster passes, on
// a two-node cluster installed as TestTwoNodeInstall installs it: kdd-cni
// and Felix by their DaemonSets, static routes between the nodes, plus what
// the specs rely on in any real cluster: kube-proxy on each node, CoreDNS
// behind the kube-dns Service, the kubelets' clusterDNS, and the control
// plane's Service and workload controllers. hostPort is served by the
// shipped conflist's chained portmap. `make k8s-conformance`.
func TestSigNetworkConformance(t *testing.T) {
	harness.RequireRoot(t)
	tools := requireTools(t, "k8s-conformance", "kube-proxy", "kubectl", "agnhost", "coredns", "conformance.test")
	suite := filepath.Join(tools, "conformance.test")
	work := t.TempDir()
	kddArchive, felixArchive := installImages(t, work)
	images, err := testImages(work, tools)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, []clusterNode{{name: "conf-a"}, {name: "conf-b"}}, 5,
		append([]string{kddArchive, felixArchive}, images...)...)
	for _, n := range c.nodes {
		n.startKubeProxy()
	}
	c.install(nil, nil)
	c.deployClusterDNS()

	// portmap's rules on each node, sampled through the run: the HostPort
	// spec's sandboxes must have had them, and their DELs must remove them.
	ctx, cancel := context.WithCancel(context.Background())
	var sampling sync.WaitGroup
	peaks := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		sampling.Go(func() { peaks[i] = n.peakHostPortChains(ctx) })
	}
	stopSampling := func() { cancel(); sampling.Wait() }
	defer stopSampling() // before the hosts close, on any path
	start := time.Now()
	log := filepath.Join(t.TempDir(), "conformance.log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(suite, "--kubeconfig="+cp.AdminKubeconfig, "--provider=local",
		"--kubectl-path="+filepath.Join(tools, "kubectl"),
		"--ginkgo.focus="+conformanceFocus, "--ginkgo.no-color", "--ginkgo.timeout=2h")
	cmd.Stdout = io.MultiWriter(out, os.Stdout)
	cmd.Stderr = cmd.Stdout
	runErr := cp.Run(cmd) // in the control plane's namespace: it reaches the apiserver
	b, _ := os.ReadFile(log)
	s, err := parseGinkgoSummary(string(b))
	t.Logf("sig-network Conformance: ran %d of %d specs, %d passed, %d failed, %d skipped, in %s (wall %s)",
		s.ran, s.total, s.passed, s.failed, s.skipped, s.took, time.Since(start).Round(time.Second))
	if err != nil || runErr != nil || s.ran != conformanceSpecs || s.passed != conformanceSpecs || s.failed != 0 {
		t.Errorf("Kubernetes' sig-network Conformance specs did not all pass (want %d run and passed): %v %v", conformanceSpecs, runErr, err)
	}
	stopSampling()
	peak := 0
	for _, p := range peaks {
		peak = max(peak, p)
	}
	t.Logf("hostPort: at most %d portmap sandbox chains on a node during the run", peak)
	if peak == 0 {
		t.Error("no node ever held a portmap sandbox chain (CNI-DN-…): the HostPort spec's pods were not mapped by the chained portmap")
	}
	c.removeClusterDNS()
	for _, n := range c.nodes {
		n.assertNothingLeft(t)
		n.assertNoHostPortRules(t)
	}
}

// deployClusterDNS runs CoreDNS (testdata/coredns.yaml) and waits until both
// replicas are ready behind kube-dns.
func (c *cluster) deployClusterDNS() {
	ctx := context.Background()
	if err := cp.ApplyManifest(ctx, filepath.Join(harness.RepoRoot(), "test", "e2e", "testdata", "coredns.yaml"), false); err != nil {
		c.t.Fatal(err)
	}
	c.nodes[0].waitFor("CoreDNS ready behind kube-dns", 120*time.Second, func() bool {
		d, err := cp.Admin.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas
	})
}

// removeClusterDNS deletes CoreDNS's Deployment and Service and waits for
// its pods to go (their sandboxes' DELs are the nodes' last).
func (c *cluster) removeClusterDNS() {
	ctx := context.Background()
	_ = cp.Admin.AppsV1().Deployments("kube-system").Delete(ctx, "coredns", metav1.DeleteOptions{})
	_ = cp.Admin.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{})
	c.nodes[0].waitFor("CoreDNS pods gone", 60*time.Second, func() bool {
		pods, err := cp.Admin.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		return err == nil && len(pods.Items) == 0
	})
}

// hostPortChains lists portmap's per-sandbox chains (CNI-DN-…) in the
// node's nat table.
func (n *node) hostPortChains() ([]string, error) {
	var dump strings.Builder
	cmd := exec.Command("iptables-save", "-t", "nat")
	cmd.Stdout = &dump
	if err := n.host.Run(cmd); err != nil {
		return nil, fmt.Errorf("iptables-save on %s: %w", n.name, err)
	}
	var chains []string
	for _, line := range strings.Split(dump.String(), "\n") {
		if strings.HasPrefix(line, ":CNI-DN-") {
			chains = append(chains, strings.Fields(line)[0])
		}
	}
	return chains, nil
}

// peakHostPortChains samples the node's portmap chains every second until
// ctx ends and returns the most it saw at once.
func (n *node) peakHostPortChains(ctx context.Context) int {
	peak := 0
	for {
		if chains, err := n.hostPortChains(); err == nil {
			peak = max(peak, len(chains))
		}
		select {
		case <-ctx.Done():
			return peak
		case <-time.After(time.Second):
		}
	}
}

// assertNoHostPortRules: every hostPort the specs mapped was unmapped by
// its sandbox's DEL (portmap's per-sandbox chains, CNI-DN-…, are gone).
func (n *node) assertNoHostPortRules(t *testing.T) {
	t.Helper()
	var left []string
	_ = harness.Poll(30*time.Second, time.Second, func() error {
		var err error
		if left, err = n.hostPortChains(); err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			return errors.New("chains left")
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("%s: portmap chains left after every sandbox's DEL: %s", n.name, strings.Join(left, ", "))
	}
}
