package calico

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const serverPort = 8080

// serve listens on serverPort inside p's namespace until the test ends.
func (w *world) serve(p *pod) {
	w.t.Helper()
	var ln net.Listener
	if err := p.Netns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", serverPort))
		return err
	}); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// reach tells whether from gets to every IP of to, by ping and by TCP.
func (w *world) reach(from, to *pod) error {
	for _, ip := range to.IPs() {
		if err := from.Netns.Ping(ip, 700*time.Millisecond); err != nil {
			return fmt.Errorf("ping %s → %s (%s): %w", from.Name, to.Name, ip, err)
		}
		if err := from.Netns.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(serverPort)), 700*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			return fmt.Errorf("tcp %s → %s (%s): %w", from.Name, to.Name, ip, err)
		}
	}
	return nil
}

// blocked tells whether from is cut off from every IP of to, both ways of
// probing.
func (w *world) blocked(from, to *pod) error {
	for _, ip := range to.IPs() {
		if from.Netns.Ping(ip, 400*time.Millisecond) == nil {
			return fmt.Errorf("ping %s → %s (%s) passed", from.Name, to.Name, ip)
		}
		if err := from.Netns.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(serverPort)), 400*time.Millisecond)
			if err == nil {
				c.Close()
				return fmt.Errorf("tcp %s → %s (%s) connected", from.Name, to.Name, ip)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// expect waits (Felix converges in about a second) for each pair to be
// reachable or blocked, then checks it holds.
func (w *world) expect(step string, open map[*pod][]*pod, closed map[*pod][]*pod) {
	w.t.Helper()
	for from, tos := range open {
		for _, to := range tos {
			if err := eventually(15*time.Second, func() error { return w.reach(from, to) }); err != nil {
				w.t.Errorf("%s: %v", step, err)
			}
		}
	}
	for from, tos := range closed {
		for _, to := range tos {
			if err := eventually(15*time.Second, func() error { return w.blocked(from, to) }); err != nil {
				w.t.Errorf("%s: %v", step, err)
			}
		}
	}
}

func (w *world) applyPolicy(np *networkingv1.NetworkPolicy) {
	w.t.Helper()
	if _, err := w.cp.Admin.NetworkingV1().NetworkPolicies(podNS).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) deletePolicy(name string) {
	w.t.Helper()
	if err := w.cp.Admin.NetworkingV1().NetworkPolicies(podNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

func selectApp(app string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

// TestFelixEnforcesNetworkPolicy: Felix, reading only the Kubernetes API,
// reports every endpoint kdd-cni created as up (our interface, our IPs) and
// enforces NetworkPolicy on ping and TCP; CHECK passes with Felix running;
// a terminating pod keeps its endpoint until DEL; DEL removes the endpoint
// and its chains. IPv4 on iptables, dual stack on nftables.
func TestFelixEnforcesNetworkPolicy(t *testing.T) {
	for _, dual := range []bool{false, true} {
		name := "iptables-v4"
		if dual {
			name = "nftables-dual"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, dual)
			w.startFelix()
			ours := w.ours(nil)
			a, b, c := w.newPod("a"), w.newPod("b"), w.newPod("c")
			for _, p := range []*pod{a, b, c} {
				w.add(ours, p)
				w.serve(p)
			}
			for _, p := range []*pod{a, b, c} {
				st := w.waitEndpointUp(p)
				var want []string
				for _, ip := range p.IPs() {
					want = append(want, (&net.IPNet{IP: ip, Mask: net.CIDRMask(len(ip)*8, len(ip)*8)}).String())
				}
				got := append(append([]string{}, st.IPv4Nets...), st.IPv6Nets...)
				slices.Sort(got)
				slices.Sort(want)
				if st.IfaceName != p.HostVeth || !slices.Equal(got, want) {
					t.Errorf("Felix reports %s as %+v, want interface %s and %v", p.Name, st, p.HostVeth, want)
				}
			}
			w.expect("no policy", map[*pod][]*pod{b: {a}, c: {a}}, nil)

			w.applyPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-a"},
				Spec: networkingv1.NetworkPolicySpec{PodSelector: selectApp("a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
			w.expect("deny all ingress to a", map[*pod][]*pod{a: {b}}, map[*pod][]*pod{b: {a}, c: {a}})

			w.applyPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-b-to-a"},
				Spec: networkingv1.NetworkPolicySpec{PodSelector: selectApp("a"),
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}}}}})
			w.expect("allow from b", map[*pod][]*pod{b: {a}}, map[*pod][]*pod{c: {a}})

			// CHECK passes while Felix owns the routes.
			for _, p := range []*pod{a, b, c} {
				if err := w.check(ours, p); err != nil {
					t.Errorf("CHECK %s with Felix running: %v", p.Name, err)
				}
			}

			w.deletePolicy("deny-a")
			w.deletePolicy("allow-b-to-a")
			w.expect("policies deleted", map[*pod][]*pod{b: {a}, c: {a}}, nil)

			// A terminating pod keeps its endpoint (and policy) until DEL.
			w.deletePod(c.Name, 300)
			time.Sleep(2 * time.Second)
			w.waitEndpointUp(c)
			w.expect("c terminating", map[*pod][]*pod{c: {a}}, nil)
			w.del(ours, c)
			w.waitEndpointGone(c)
			if r := w.rules(); strings.Contains(r, c.HostVeth) {
				t.Errorf("rules for %s left after DEL:\n%s", c.HostVeth, grep(r, c.HostVeth))
			}
			for _, p := range []*pod{a, b} {
				w.del(ours, p)
				w.waitEndpointGone(p)
			}
			if r := w.rules(); strings.Contains(r, "cali-tw-cali") || strings.Contains(r, "cali-fw-cali") {
				t.Errorf("per-endpoint chains left after DEL:\n%s", grep(r, "-cali"))
			}
		})
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestWaitForPolicyWithFelix: with policy_setup_timeout_seconds, ADD
// returns once Felix has programmed the endpoint, well before the timeout;
// and a deny-all policy applied before the pod exists holds for its very
// first packet. The figures compare ADD with and without the wait.
func TestWaitForPolicyWithFelix(t *testing.T) {
	w := newWorld(t, false)
	w.startFelix()
	server := w.newPod("server")
	w.add(w.ours(nil), server)
	w.serve(server)

	w.applyPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-egress-a"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: selectApp("a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}})
	time.Sleep(time.Second) // let Felix learn the policy

	waiting := w.ours(map[string]any{"policy_setup_timeout_seconds": 10,
		"endpoint_status_dir": w.felix.StatusDir()})
	var with, without []time.Duration
	for i := range 5 {
		p := w.newPodNamed(fmt.Sprintf("a-%d", i), "a")
		start := time.Now()
		w.add(waiting, p)
		d := time.Since(start)
		with = append(with, d)
		if _, err := os.Stat(filepath.Join(w.felix.StatusDir(), statusFile(p))); err != nil {
			t.Errorf("ADD returned before Felix wrote the status file: %v", err)
		}
		if d > 8*time.Second {
			t.Errorf("ADD with the wait took %s, near the 10 s timeout", d)
		}
		// The first packet is already subject to the egress deny.
		if err := w.blocked(p, server); err != nil {
			t.Errorf("first packet of %s: %v", p.Name, err)
		}
		q := w.newPodNamed(fmt.Sprintf("n-%d", i), "n")
		start = time.Now()
		w.add(w.ours(nil), q)
		without = append(without, time.Since(start))
	}
	slices.Sort(with)
	slices.Sort(without)
	t.Logf("ADD p50 with the wait for policy: %s (min %s, max %s); without: %s (min %s, max %s)",
		with[len(with)/2], with[0], with[len(with)-1], without[len(without)/2], without[0], without[len(without)-1])
}
