package integration

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// assertNothingAllocated: no lease, no host veth, no container interface,
// no annotation for the pod.
func (e *env) assertNothingAllocated(p *pod, annotated bool) {
	e.t.Helper()
	if l := e.leases(); len(l) != 0 {
		e.t.Errorf("leases left after failed ADD: %v", l)
	}
	if linkExists(e.t, p.HostVeth) {
		e.t.Errorf("host veth %s left after failed ADD", p.HostVeth)
	}
	if p.Netns != nil {
		_ = p.Netns.Do(func() error {
			if l, err := netlink.LinkByName("eth0"); err == nil && l.Type() == "veth" {
				e.t.Errorf("container veth eth0 left after failed ADD")
			}
			return nil
		})
	}
	if annotated {
		if a := e.annotations(p.Name); a["cni.projectcalico.org/podIP"] != "" {
			e.t.Errorf("annotations written by a failed ADD: %v", a)
		}
	}
}

func TestAddErrorPathsLeaveNothing(t *testing.T) {
	t.Run("pod does not exist", func(t *testing.T) {
		e := newEnv(t, podCIDRs("dual")...)
		p := e.newPod("ghost", true)
		r := e.call("ADD", p, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, "not found") || !strings.Contains(ce.Msg, "ghost") {
			t.Errorf("error %q", ce.Msg)
		}
		e.assertNothingAllocated(p, false)
	})
	t.Run("netns does not exist", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		p := e.newPod("a", false)
		_ = p.Netns.Close()
		r := e.call("ADD", p, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, "netns") && !strings.Contains(ce.Msg, p.Netns.Path) {
			t.Errorf("error %q", ce.Msg)
		}
		p.Netns = nil
		e.assertNothingAllocated(p, true)
	})
	t.Run("interface name taken in the pod", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		p := e.newPod("a", false)
		if err := p.Netns.Do(func() error {
			la := netlink.NewLinkAttrs()
			la.Name = "eth0"
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "mine"})
		}); err != nil {
			t.Fatal(err)
		}
		r := e.call("ADD", p, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, "already exists") {
			t.Errorf("error %q", ce.Msg)
		}
		// The pre-existing interface is not ours: it must survive the rollback.
		if err := p.Netns.Do(func() error { _, err := netlink.LinkByName("mine"); return err }); err != nil {
			t.Errorf("rollback deleted an interface it did not create: %v", err)
		}
		if l := e.leases(); len(l) != 0 {
			t.Errorf("leases left: %v", l)
		}
		if linkExists(t, p.HostVeth) {
			t.Errorf("host veth left")
		}
	})
	t.Run("host route owned by another interface", func(t *testing.T) {
		cidrs := podCIDRs("v4")
		e := newEnv(t, cidrs...)
		p := e.newPod("a", false)
		_, n, _ := net.ParseCIDR(cidrs[0])
		first := n.IP.To4()
		first[3] = 2 // host-local's first address
		dst := &net.IPNet{IP: first, Mask: net.CIDRMask(32, 32)}
		inNode(t, func() error {
			l, err := netlink.LinkByName("uplink0")
			if err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
		})
		t.Cleanup(func() {
			_ = cluster.DoInNode(func() error { return netlink.RouteDel(&netlink.Route{Dst: dst}) })
		})
		r := e.call("ADD", p, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, `through interface "uplink0"`) {
			t.Errorf("error %q", ce.Msg)
		}
		e.assertNothingAllocated(p, true)
	})
	t.Run("API server unreachable after IPAM", func(t *testing.T) {
		e := newEnv(t)
		e.ipam["subnet"] = "10.199.0.0/24" // static: IPAM runs before any API call
		e.extra["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
		p := e.newPod("a", false)
		r := e.call("ADD", p, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, "annotations") || !strings.Contains(ce.Msg, "127.0.0.1:1") {
			t.Errorf("error %q", ce.Msg)
		}
		e.assertNothingAllocated(p, true)
	})
}

// Bad input gets a clear CNI error naming the problem, and allocates nothing.
func TestBadInput(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	noCIDR := newEnv(t)
	// withKey is e's configuration with one more top-level key.
	withKey := func(key string, v any) func() []byte {
		return func() []byte {
			e.extra[key] = v
			defer delete(e.extra, key)
			return e.conf()
		}
	}
	for _, tc := range []struct {
		name string
		env  *env
		conf func() []byte
		args string
		want string
	}{
		{"malformed JSON", e, func() []byte { return []byte(`{"cniVersion":"1.0.0","name":`) }, "", "network config"},
		{"unknown datastore", e, func() []byte {
			return []byte(strings.Replace(string(e.conf()), `"datastore_type":"kubernetes"`, `"datastore_type":"etcdv3"`, 1))
		}, "", `unsupported datastore_type "etcdv3"`},
		{"missing pod args", e, e.conf, "IgnoreUnknown=1;K8S_POD_NAME=x", "K8S_POD_NAMESPACE"},
		{"unsupported version", e, func() []byte {
			return []byte(strings.Replace(string(e.conf()), `"cniVersion":"1.1.0"`, `"cniVersion":"2.0.0"`, 1))
		}, "", "2.0.0"},
		{"node without podCIDR", noCIDR, noCIDR.conf, "", "has no podCIDR"},
		{"node does not exist", e, func() []byte {
			return []byte(strings.Replace(string(e.conf()), `"nodename":"`+e.node+`"`, `"nodename":"no-such-node"`, 1))
		}, "", `node "no-such-node"`},
		{"policy type other than k8s", e, withKey("policy", map[string]any{"type": "calico"}), "", `unsupported policy.type "calico"`},
		{"empty name", e, func() []byte {
			return []byte(strings.Replace(string(e.conf()), `"name":"`+networkName+`"`, `"name":""`, 1))
		}, "", "name"},
		{"empty cniVersion", e, func() []byte {
			return []byte(strings.Replace(string(e.conf()), `"cniVersion":"1.1.0"`, `"cniVersion":""`, 1))
		}, "", "incompatible CNI versions"},
		{"negative num queues", e, withKey("num_queues", -1), "", "num_queues"},
		{"ipam route without dst", e, func() []byte {
			e.ipam["routes"] = []any{map[string]any{"gw": "10.1.2.3"}}
			defer delete(e.ipam, "routes")
			return e.conf()
		}, "", "dst"},
		{"readiness gate not http", e, withKey("readiness_gates", []any{"file:///tmp/ready"}), "", "readiness"},
		{"negative policy setup timeout", e, withKey("policy_setup_timeout_seconds", -1), "", "policy_setup_timeout_seconds"},
		{"no ipam type", e, func() []byte {
			delete(e.ipam, "type")
			defer func() { e.ipam["type"] = "host-local" }()
			return e.conf()
		}, "", "ipam.type is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.env.newPod(strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")), false)
			call := tc.env.call
			if tc.args != "" {
				r := clusterRunWithArgs(tc.env, p, tc.conf(), tc.args)
				if ce := cniErr(t, r); !strings.Contains(ce.Msg+ce.Details, tc.want) {
					t.Errorf("error %q, want it to mention %q", ce.Msg, tc.want)
				}
			} else {
				r := call("ADD", p, tc.conf())
				if ce := cniErr(t, r); !strings.Contains(ce.Msg+ce.Details, tc.want) {
					t.Errorf("error %q (%s), want it to mention %q", ce.Msg, ce.Details, tc.want)
				}
			}
			tc.env.assertNothingAllocated(p, true)
		})
	}
}

func clusterRunWithArgs(e *env, p *pod, conf []byte, args string) cniResult {
	return cluster.RunCNI(context.Background(), cniCall(e, p, "ADD", conf, args))
}
