package naming

import "testing"

func TestHostVeth(t *testing.T) {
	for _, tc := range []struct{ prefix, ns, pod, want string }{
		// Calico's documented example.
		{"cali", "default", "nginx-abc", "calic611c731f42"},
		{"tap", "default", "nginx-abc", "tapc611c731f42"},
	} {
		if got := HostVeth(tc.prefix, tc.ns, tc.pod); got != tc.want {
			t.Errorf("HostVeth(%q,%q,%q) = %q, want %q", tc.prefix, tc.ns, tc.pod, got, tc.want)
		}
	}
	if n := len(HostVeth("cali", "a-very-long-namespace-name", "and-a-long-pod-name-0")); n != 15 {
		t.Errorf("host veth length %d, want 15", n)
	}
}

func TestInterfacePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "cali", "tap": "tap", "tap,cali": "tap", " ,x": "cali"} {
		if got := InterfacePrefix(in); got != want {
			t.Errorf("InterfacePrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWorkloadEndpoint(t *testing.T) {
	if got := WorkloadEndpoint("node-1", "nginx-abc", "eth0"); got != "node--1-k8s-nginx--abc-eth0" {
		t.Errorf("got %q", got)
	}
}

func TestHostVethAlias(t *testing.T) {
	a := HostVethAlias("k8s-pod-network", "abc123", "eth0")
	if net, id, ifn, ok := ParseHostVethAlias(a); !ok || net != "k8s-pod-network" || id != "abc123" || ifn != "eth0" {
		t.Errorf("round trip of %q: %q %q %q %v", a, net, id, ifn, ok)
	}
	for _, bad := range []string{"", "other", "kdd-cni/", "kdd-cni/abc123/eth0", "kdd-cni//abc/eth0", "kdd-cni/n/abc/", "kdd-cni/n/a/b/c"} {
		if _, _, _, ok := ParseHostVethAlias(bad); ok {
			t.Errorf("%q parsed as ours", bad)
		}
	}
}
