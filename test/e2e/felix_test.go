package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// TestFelixOnNode: Calico's Felix runs beside the kubelet in KDD
// policy-only mode; NetworkPolicy applied through the API blocks and then
// permits traffic between pods the kubelet started on kdd-cni's network;
// with policy_setup_timeout_seconds a pod's first packet is already subject
// to its policy; a pod's QoS annotations shape its traffic and limit its
// connections.
func TestFelixOnNode(t *testing.T) {
	harness.RequireRoot(t)
	calico, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := cp.InstallCalicoCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	// As in a cluster, Felix (calico-node) starts once its Node is registered.
	const nodeName = "felix-node"
	statusPrefix := t.TempDir()
	n := startNodeWith(t, nodeName, containerd16, map[string]any{
		"policy_setup_timeout_seconds": 10, "endpoint_status_dir": filepath.Join(statusPrefix, "endpoint-status")})
	felix, err := cp.StartFelix(ctx, calico, harness.FelixOptions{Node: nodeName, StatusPrefix: statusPrefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("felix log:\n%s", felix.Tail(6000))
		}
		_ = felix.Stop(10 * time.Second)
	})
	pods := []string{"pol-a", "pol-b", "pol-c"}
	n.createPods(pods)
	n.assertPodNetworks(t, pods)

	probe := func(from, to string) error {
		ipFrom, ipTo := getPod(t, from).Status.PodIP, getPod(t, to).Status.PodIP
		got, err := httpGet(fmt.Sprintf("http://%s:8080/probe?addr=%s:8080", ipFrom, ipTo))
		if err == nil && got != "hello from "+to+" via "+from {
			err = fmt.Errorf("%s → %s: %q", from, to, got)
		}
		return err
	}
	expect := func(step string, open, closed [][2]string) {
		t.Helper()
		for _, p := range open {
			var last error
			n.waitFor(step+": "+p[0]+" reaches "+p[1], 20*time.Second, func() bool {
				last = probe(p[0], p[1])
				if last != nil {
					t.Logf("%s: %v", step, last)
				}
				return last == nil
			})
		}
		for _, p := range closed {
			n.waitFor(step+": "+p[0]+" blocked from "+p[1], 20*time.Second, func() bool { return probe(p[0], p[1]) != nil })
		}
	}
	policies := cp.Admin.NetworkingV1().NetworkPolicies(namespace)
	sel := func(app string) metav1.LabelSelector {
		return metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}

	expect("no policy", [][2]string{{"pol-b", "pol-a"}, {"pol-c", "pol-a"}}, nil)
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-a"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: sel("pol-a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := policies.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("deny all ingress to a", nil, [][2]string{{"pol-b", "pol-a"}, {"pol-c", "pol-a"}})
	fromB := sel("pol-b")
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-b"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: sel("pol-a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &fromB}}}}}}
	if _, err := policies.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("allow from b", [][2]string{{"pol-b", "pol-a"}}, [][2]string{{"pol-c", "pol-a"}})
	for _, name := range []string{"deny-a", "allow-b"} {
		if err := policies.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expect("policies deleted", [][2]string{{"pol-b", "pol-a"}, {"pol-c", "pol-a"}}, nil)

	t.Run("the first packet is subject to policy", func(t *testing.T) {
		egress := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-egress-first"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: sel("first"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}}
		if _, err := policies.Create(ctx, egress, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // Felix learns the policy before the pod exists
		target := getPod(t, "pol-a").Status.PodIP + ":8080"
		for i := range 3 {
			name := fmt.Sprintf("first-%d", i)
			p := pod(name, nodeName)
			p.Labels["app"] = "first"
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "FIRST_PROBE", Value: target}}
			if _, err := cp.Admin.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			n.waitFor(name+" Ready", 60*time.Second, func() bool { return ready(getPod(t, name)) })
			var got string
			var err error
			n.waitFor(name+" serves", 20*time.Second, func() bool { // it probes before serving
				got, err = httpGet("http://" + getPod(t, name).Status.PodIP + ":8080/first")
				return err == nil
			})
			if !strings.HasPrefix(got, "blocked") {
				t.Errorf("first packet of %s: %q %v (want blocked by the egress policy)", name, got, err)
			}
		}
	})
	t.Run("QoS controls", func(t *testing.T) { n.checkQoS(t, "pol-b", "pol-c") })
	n.deletePods(append(pods, "first-0", "first-1", "first-2"))
	n.assertNothingLeft(t)
	if entries, _ := filepath.Glob(filepath.Join(felix.StatusDir(), "*")); len(entries) != 0 {
		n.waitFor("Felix drops every endpoint", 20*time.Second, func() bool {
			e, _ := filepath.Glob(filepath.Join(felix.StatusDir(), "*"))
			return len(e) == 0
		})
	}
}
