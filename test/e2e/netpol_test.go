package e2e

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// Kubernetes' NetworkPolicy specs: every [Feature:NetworkPolicy] spec but
// the SCTP ones (the kernel here has no SCTP module loaded).
const (
	netpolFocus = `\[Feature:NetworkPolicy\]`
	netpolSkip  = `\[Feature:SCTPConnectivity\]`
	netpolSpecs = 46
)

// TestNetworkPolicySuite runs Kubernetes' own NetworkPolicy e2e specs
// (k8s.io/kubernetes v1.37.2, test/e2e/network/netpol) against a node
// installed from the manifests as TestTwoNodeInstall does: kdd-cni as the
// CNI and Calico's Felix enforcing, plus kube-proxy (the specs probe
// Service ClusterIPs) and pods/exec from the apiserver to the kubelet (the
// probes are `agnhost connect` execs). Twice: with the shipped conflist on
// one node; and on two nodes routed by flannel's VXLAN backend (the seeds'
// "kubeadm + flannel" install, TestFlannelInstall), so the specs' pods
// talk across nodes through flannel, with ADD waiting for Felix's policy
// (policy_setup_timeout_seconds). `make netpol`.
func TestNetworkPolicySuite(t *testing.T) {
	harness.RequireRoot(t)
	tools := requireTools(t, "netpol", "kube-proxy", "agnhost", "netpol.test", "flanneld", "flannel-install-conf", "kube-flannel.yml")
	suite := filepath.Join(tools, "netpol.test")
	work := t.TempDir()
	kddArchive, felixArchive := installImages(t, work)
	agnArchive, err := testImages(work, tools, agnhostImage)
	if err != nil {
		t.Fatal(err)
	}
	flannelArchive, err := buildFlannelImage(work, tools)
	if err != nil {
		t.Fatal(err)
	}
	archives := append([]string{kddArchive, felixArchive}, agnArchive...)
	// Felix's default deny action (DROP): its REJECT would make blocked
	// probes fail at once, but Felix v3.31 in iptables mode then panics at
	// start (its RPF rule in the raw table takes the same action, and the
	// kernel refuses REJECT there).
	t.Run("shipped conflist", func(t *testing.T) {
		c := newCluster(t, []clusterNode{{name: "netpol-3"}}, 3, archives...)
		c.startKubeProxies()
		c.install(nil, nil)
		runNetpolSuite(t, suite, c, false)
	})
	t.Run("policy_setup_timeout_seconds, two nodes over flannel VXLAN", func(t *testing.T) {
		c := startCluster(t, []clusterNode{{name: "netpol-fl-a"}, {name: "netpol-fl-b"}}, 15, append(archives, flannelArchive)...)
		c.routeBetweenNodes(false)
		c.startKubeProxies()
		// Felix writes endpoint status files where the plugin waits for them.
		c.install(map[string]string{"FELIX_ENDPOINTSTATUSPATHPREFIX": "/var/run/calico"},
			map[string]any{"policy_setup_timeout_seconds": 10})
		be := flannelBackend{name: "vxlan", mtu: 1450}
		c.installFlannel(t, be, filepath.Join(tools, "kube-flannel.yml"))
		c.assertFlannelNodes(t, be)
		runNetpolSuite(t, suite, c, true)
	})
}

// startKubeProxies starts kube-proxy on every node.
func (c *cluster) startKubeProxies() {
	for _, n := range c.nodes {
		n.startKubeProxy()
	}
}

// runNetpolSuite runs the specs on c, installed; waited says the plugin
// was set to wait for Felix's policy.
func runNetpolSuite(t *testing.T, suite string, c *cluster, waited bool) {
	start := time.Now()
	log := filepath.Join(t.TempDir(), "netpol.log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(suite, "--kubeconfig="+cp.AdminKubeconfig, "--provider=local",
		"--ginkgo.focus="+netpolFocus, "--ginkgo.skip="+netpolSkip, "--ginkgo.no-color",
		"--ginkgo.timeout=2h")
	cmd.Stdout = io.MultiWriter(out, os.Stdout)
	cmd.Stderr = cmd.Stdout
	runErr := cp.Run(cmd) // in the control plane's namespace: it reaches the apiserver
	b, _ := os.ReadFile(log)
	s, err := parseGinkgoSummary(string(b))
	t.Logf("NetworkPolicy suite: ran %d of %d specs, %d passed, %d failed, %d skipped, in %s (wall %s)",
		s.ran, s.total, s.passed, s.failed, s.skipped, s.took, time.Since(start).Round(time.Second))
	if err != nil || runErr != nil || s.ran != netpolSpecs || s.passed != netpolSpecs || s.failed != 0 {
		t.Errorf("Kubernetes' NetworkPolicy specs did not all pass (want %d run and passed): %v %v", netpolSpecs, runErr, err)
	}
	for _, n := range c.nodes {
		n.assertNothingLeft(t)
		if waited {
			assertWaitedForPolicy(t, n)
		}
	}
}

// assertWaitedForPolicy: every ADD on the node waited for Felix's status
// file, and none timed out (the plugin's log, as install-cni set it up).
func assertWaitedForPolicy(t *testing.T, n *node) {
	b, err := os.ReadFile(filepath.Join(n.host.Root("/var/log/calico"), "cni", "cni.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	waited, timedOut := strings.Count(log, "policy programmed by Felix"), strings.Count(log, "timed out waiting for Felix")
	t.Logf("%s: %d ADDs waited for their policy, %d timed out", n.name, waited, timedOut)
	if waited == 0 || timedOut > 0 {
		t.Errorf("%s: %d ADDs waited for Felix's policy and %d timed out (want all, none)", n.name, waited, timedOut)
	}
}

// ginkgoSummary is ginkgo's closing summary: "Ran 46 of 51 Specs in 340.9
// seconds" and "SUCCESS! -- 46 Passed | 0 Failed | 0 Pending | 5 Skipped".
type ginkgoSummary struct {
	ran, total, passed, failed, skipped int
	took                                string
}

var (
	ranRE    = regexp.MustCompile(`Ran (\d+) of (\d+) Specs in ([\d.]+) seconds`)
	resultRE = regexp.MustCompile(`(?:SUCCESS|FAIL)! .*?(\d+) Passed \| (\d+) Failed \| \d+ Pending \| (\d+) Skipped`)
)

func parseGinkgoSummary(log string) (ginkgoSummary, error) {
	var s ginkgoSummary
	ran, result := ranRE.FindStringSubmatch(log), resultRE.FindStringSubmatch(log)
	if ran == nil || result == nil {
		return s, errors.New("no ginkgo summary in the suite's output")
	}
	s.ran, _ = strconv.Atoi(ran[1])
	s.total, _ = strconv.Atoi(ran[2])
	s.took = ran[3] + " s"
	s.passed, _ = strconv.Atoi(result[1])
	s.failed, _ = strconv.Atoi(result[2])
	s.skipped, _ = strconv.Atoi(result[3])
	return s, nil
}

func TestParseGinkgoSummary(t *testing.T) {
	ok := "Ran 46 of 51 Specs in 340.918 seconds\nSUCCESS! -- 46 Passed | 0 Failed | 0 Pending | 5 Skipped\nPASS\n"
	if s, err := parseGinkgoSummary(ok); err != nil || s.ran != 46 || s.total != 51 || s.passed != 46 || s.failed != 0 || s.skipped != 5 {
		t.Errorf("%+v %v", s, err)
	}
	bad := "Ran 36 of 51 Specs in 556.878 seconds\nFAIL! - Interrupted by User -- 32 Passed | 4 Failed | 0 Pending | 15 Skipped\n"
	if s, err := parseGinkgoSummary(bad); err != nil || s.passed != 32 || s.failed != 4 {
		t.Errorf("%+v %v", s, err)
	}
	if _, err := parseGinkgoSummary("SUCCESS! 5m40s PASS"); err == nil {
		t.Error("a summary without counts accepted")
	}
}
