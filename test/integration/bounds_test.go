package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// ipamThatFailsAfter is an IPAM plugin that runs the real host-local (which
// allocates) and then fails, or hangs until it is killed.
func ipamThatFailsAfter(t *testing.T, then string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		`out=$("` + filepath.Join(binDir, "host-local") + `")` + "\n" +
		`[ "$CNI_COMMAND" = ADD ] || { echo "$out"; exit 0; }` + "\n" + then + "\n"
	if err := os.WriteFile(filepath.Join(dir, "hostlocal-then"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFailedIPAMAddLeavesNoLease: an IPAM ADD that allocated and then
// failed, or was killed at ADD's deadline, leaves no lease.
func TestFailedIPAMAddLeavesNoLease(t *testing.T) {
	for name, then := range map[string]string{
		"fails": `echo '{"cniVersion":"1.0.0","code":5,"msg":"disk on fire"}'; exit 1`,
		"hangs": `sleep 60`,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, podCIDRs("v4")...)
			e.ipam["type"] = "hostlocal-then"
			p := e.newPod("victim", false)
			c := cniCall(e, p, "ADD", e.conf(), "K8S_POD_NAMESPACE="+e.ns+";K8S_POD_NAME="+p.Name)
			c.Path = ipamThatFailsAfter(t, then) + ":" + binDir
			start := time.Now()
			r := cluster.RunCNI(context.Background(), c)
			took := time.Since(start)
			cniErr(t, r)
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left after a failed IPAM ADD: %v", l)
			}
			e.assertGone(p, nil)
			if took > 10500*time.Millisecond {
				t.Errorf("ADD took %s, beyond its 10 s bound", took)
			}
		})
	}
}

// faultProxy starts a fault proxy on port for the test, and returns it
// with a CNI kubeconfig that goes through it.
func faultProxy(t *testing.T, port int) (*harness.FaultProxy, string) {
	t.Helper()
	proxy, err := cluster.StartFaultProxy(port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	via, err := cluster.KubeconfigVia(kubeconfig, proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	return proxy, via
}

// TestAddBoundAndCodes: with the API server hanging, ADD ends within its
// bound (10 s, rollback included), says "try again later" (11), and leaves
// nothing; a bad configuration is 7, a bad CNI_ARGS 4, an unsupported
// version 1 (the spec's "incompatible CNI version").
func TestAddBoundAndCodes(t *testing.T) {
	proxy, via := faultProxy(t, 16443)
	for _, f := range []harness.Fault{{Hang: true}, {Status: 503}, {Drop: true}} {
		t.Run(f.String(), func(t *testing.T) {
			e := newEnv(t, podCIDRs("v4")...)
			e.extra["kubernetes"] = map[string]any{"kubeconfig": via}
			proxy.Set(f)
			defer proxy.Set(harness.Fault{})
			p := e.newPod("bounded", false)
			start := time.Now()
			r := e.call("ADD", p, e.conf())
			took := time.Since(start)
			ce := cniErr(t, r)
			if ce.Code != types.ErrTryAgainLater {
				t.Errorf("code %d (%s), want 11", ce.Code, ce.Msg)
			}
			if took > 10500*time.Millisecond {
				t.Errorf("ADD took %s, beyond its 10 s bound", took)
			}
			e.assertGone(p, nil)
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
	t.Run("codes", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		p := e.newPod("codes", false)
		bad := strings.Replace(string(e.conf()), `"mtu":1500`, `"mtu":-5`, 1)
		if ce := cniErr(t, e.call("ADD", p, []byte(bad))); ce.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("bad config: code %d (%s), want 7", ce.Code, ce.Msg)
		}
		c := cniCall(e, p, "ADD", e.conf(), "K8S_POD_NAMESPACE=Bad_Name;K8S_POD_NAME=x")
		if ce := cniErr(t, cluster.RunCNI(context.Background(), c)); ce.Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("bad CNI_ARGS: code %d (%s), want 4", ce.Code, ce.Msg)
		}
		e.version = "9.9.9"
		if ce := cniErr(t, e.call("ADD", p, e.conf())); ce.Code != types.ErrIncompatibleCNIVersion {
			t.Errorf("unsupported version: code %d (%s), want 1", ce.Code, ce.Msg)
		}
	})
}
