package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// The AdminNetworkPolicy API (network-policy-api v1alpha1), as Felix reads it.
var (
	anpResource  = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1alpha1", Resource: "adminnetworkpolicies"}
	banpResource = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1alpha1", Resource: "baselineadminnetworkpolicies"}
)

// podsIn selects the pods labelled app=<app> in the e2e namespace, as an
// AdminNetworkPolicy subject or peer.
func podsIn(app string) map[string]any {
	return map[string]any{"pods": map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": namespace}},
		"podSelector":       map[string]any{"matchLabels": map[string]any{"app": app}},
	}}
}

// adminPolicy is an (Baseline)AdminNetworkPolicy on b1's ingress: one rule
// per action, from the pods named.
func adminPolicy(kind, name string, priority int64, rules ...[2]string) *unstructured.Unstructured {
	var ingress []any
	for _, r := range rules {
		ingress = append(ingress, map[string]any{"name": r[0] + "-" + r[1], "action": r[0], "from": []any{podsIn(r[1])}})
	}
	spec := map[string]any{"subject": podsIn("b1"), "ingress": ingress}
	if kind == "AdminNetworkPolicy" {
		spec["priority"] = priority
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

// adminPolicyTiers: AdminNetworkPolicy and BaselineAdminNetworkPolicy on
// kdd-cni pods across the nodes, enforced by Felix in the order Kubernetes
// defines, which the manifest's tiers give it: an ANP Deny wins over a
// NetworkPolicy that allows, an ANP Pass hands the packet on, and the BANP
// applies only to pods no NetworkPolicy selects.
func (c *cluster) adminPolicyTiers() {
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(cp.AdminConfig)
	if err != nil {
		c.t.Fatal(err)
	}
	anps, banps := dyn.Resource(anpResource), dyn.Resource(banpResource)
	create := func(ri dynamic.ResourceInterface, obj *unstructured.Unstructured) {
		if _, err := ri.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			c.t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	remove := func(ri dynamic.ResourceInterface, name string) {
		if err := ri.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			c.t.Fatalf("delete %s: %v", name, err)
		}
	}
	policies := cp.Admin.NetworkingV1().NetworkPolicies(namespace)
	allowAll := allowAllIngressTo("b1")
	if _, err := policies.Create(ctx, allowAll, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.expect("NetworkPolicy allows every source into b1", [][2]string{{"a1", "b1"}, {"a2", "b1"}}, nil)

	create(anps, adminPolicy("AdminNetworkPolicy", "deny-a1-to-b1", 10, [2]string{"Deny", "a1"}))
	c.expect("an ANP Deny overrides the NetworkPolicy's allow", [][2]string{{"a2", "b1"}}, [][2]string{{"a1", "b1"}})
	// A higher-priority (lower number) Pass for a1: on to the NetworkPolicy.
	create(anps, adminPolicy("AdminNetworkPolicy", "pass-a1-to-b1", 5, [2]string{"Pass", "a1"}))
	c.expect("an ANP Pass hands a1 on to the NetworkPolicy", [][2]string{{"a1", "b1"}, {"a2", "b1"}}, nil)
	remove(anps, "pass-a1-to-b1")
	remove(anps, "deny-a1-to-b1")

	create(banps, adminPolicy("BaselineAdminNetworkPolicy", "default", 0, [2]string{"Deny", "a1"}, [2]string{"Deny", "a2"}))
	c.expect("the BANP yields to the NetworkPolicy selecting b1", [][2]string{{"a1", "b1"}, {"a2", "b1"}}, nil)
	if err := policies.Delete(ctx, allowAll.Name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.expect("the BANP denies where no NetworkPolicy selects", nil, [][2]string{{"a1", "b1"}, {"a2", "b1"}})
	create(anps, adminPolicy("AdminNetworkPolicy", "allow-a2-to-b1", 20, [2]string{"Allow", "a2"}))
	c.expect("an ANP Allow overrides the BANP", [][2]string{{"a2", "b1"}}, [][2]string{{"a1", "b1"}})
	remove(anps, "allow-a2-to-b1")
	remove(banps, "default")
	c.expect("admin policies deleted", [][2]string{{"a1", "b1"}, {"a2", "b1"}}, nil)
}

// allowAllIngressTo is a NetworkPolicy that selects app=<app> and allows
// every source in.
func allowAllIngressTo(app string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-all-to-" + app}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
	}}
}

// The network-policy-api suite's core tests that cannot pass here, and why:
// this kernel has no SCTP (socket(…, IPPROTO_SCTP) fails with
// EPROTONOSUPPORT), and the two "Gress" tests probe SCTP beside TCP and UDP.
var anpSkipped = []string{
	"AdminNetworkPolicyEgressSCTP", "AdminNetworkPolicyIngressSCTP",
	"BaselineAdminNetworkPolicyEgressSCTP", "BaselineAdminNetworkPolicyIngressSCTP",
	"AdminNetworkPolicyGress", "BaselineAdminNetworkPolicyGress",
}

// anpTests is how many core tests run and must pass: 16, less those.
const anpTests = 10

// TestAdminNetworkPolicySuite runs the network-policy-api conformance suite
// (v0.1.5, its core AdminNetworkPolicy and BaselineAdminNetworkPolicy tests,
// as Calico's CI runs it) on a two-node cluster installed as
// TestTwoNodeInstall installs it, Felix enforcing. `make anp`.
func TestAdminNetworkPolicySuite(t *testing.T) {
	harness.RequireRoot(t)
	tools := requireTools(t, "anp", "agnhost", "anp.test")
	suite := filepath.Join(tools, "anp.test")
	work := t.TempDir()
	kddArchive, felixArchive := installImages(t, work)
	images, err := testImages(work, tools, agnhost245Image)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, []clusterNode{{name: "anp-a"}, {name: "anp-b"}}, 7, append([]string{kddArchive, felixArchive}, images...)...)
	c.install(nil, nil)

	start := time.Now()
	log := filepath.Join(t.TempDir(), "anp.log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(suite, "-test.v", "-test.timeout=60m", "-skip-tests="+strings.Join(anpSkipped, ","))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cp.AdminKubeconfig)
	cmd.Stdout = io.MultiWriter(out, os.Stdout)
	cmd.Stderr = cmd.Stdout
	runErr := cp.Run(cmd) // in the control plane's namespace: it reaches the apiserver
	b, _ := os.ReadFile(log)
	// The suite reports the tests it skips by name as passed in no time.
	s := parseGoTestResults(string(b), "TestAdminNetworkPolicyConformance", anpSkipped...)
	t.Logf("network-policy-api conformance: %d tests passed, %d failed, %d skipped (%d not run here); %d subtests passed, %d failed (wall %s)",
		s.passed[1], s.failed[1], s.skipped[1], len(anpSkipped), s.passed[2], s.failed[2], time.Since(start).Round(time.Second))
	if runErr != nil || s.failed[1]+s.failed[2] > 0 || s.passed[1] != anpTests {
		t.Errorf("the AdminNetworkPolicy conformance tests did not all pass (want %d tests passed, none failed): %v", anpTests, runErr)
	}
	// The suite deletes its namespaces; their pods' servers take their
	// grace period to stop.
	c.nodes[0].waitFor("the suite's namespaces deleted", 180*time.Second, func() bool {
		nss, err := cp.Admin.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, ns := range nss.Items {
			if strings.HasPrefix(ns.Name, "network-policy-conformance-") {
				return false
			}
		}
		return true
	})
	for _, n := range c.nodes {
		n.assertNothingLeft(t)
	}
}

// goTestResults counts `go test -v` results by depth below the top test:
// depth 1 its subtests, depth 2 theirs.
type goTestResults struct{ passed, failed, skipped [3]int }

var goTestResultRE = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

func parseGoTestResults(log, top string, notRun ...string) goTestResults {
	var r goTestResults
	for _, line := range strings.Split(log, "\n") {
		m := goTestResultRE.FindStringSubmatch(line)
		if m == nil || !strings.HasPrefix(m[2], top) || slices.Contains(notRun, strings.TrimPrefix(m[2], top+"/")) {
			continue
		}
		depth := min(strings.Count(m[2], "/"), 2)
		switch m[1] {
		case "PASS":
			r.passed[depth]++
		case "FAIL":
			r.failed[depth]++
		case "SKIP":
			r.skipped[depth]++
		}
	}
	return r
}

func TestParseGoTestResults(t *testing.T) {
	log := "--- FAIL: T (1s)\n    --- PASS: T/A (1s)\n        --- PASS: T/A/x (0s)\n        --- FAIL: T/A/y (0s)\n    --- SKIP: T/B (0s)\n--- PASS: Other (0s)\n"
	r := parseGoTestResults(log, "T")
	if r.failed[0] != 1 || r.passed[1] != 1 || r.skipped[1] != 1 || r.passed[2] != 1 || r.failed[2] != 1 {
		t.Errorf("%+v", r)
	}
	if r := parseGoTestResults(log, "T", "A"); r.passed[1] != 0 || r.skipped[1] != 1 {
		t.Errorf("a test not run counted: %+v", r)
	}
}
