package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// calicoObjects are what calico-node would create and Felix needs: the
// datastore marked ready and the default tier.
const calicoObjects = `apiVersion: crd.projectcalico.org/v1
kind: ClusterInformation
metadata: {name: default}
spec: {datastoreReady: true}
---
apiVersion: crd.projectcalico.org/v1
kind: Tier
metadata: {name: default}
spec: {order: 1000000, defaultAction: Deny}
`

// InstallCalicoCRDs applies Calico's CRDs from the pinned release
// (conf/calico-crds.yaml, server side: the largest is too big for a
// last-applied annotation), waits until they are served, then creates
// ClusterInformation/default and Tier/default.
func (cp *ControlPlane) InstallCalicoCRDs(ctx context.Context) error {
	crds := filepath.Join(RepoRoot(), "conf", "calico-crds.yaml")
	if err := cp.ApplyCRDs(ctx, crds); err != nil {
		return err
	}
	objs := filepath.Join(cp.Dir, "calico-objects.yaml")
	if err := os.WriteFile(objs, []byte(calicoObjects), 0o644); err != nil {
		return err
	}
	return cp.ApplyManifest(ctx, objs, false)
}

// calicoCNIRBAC is the identity of Calico's calico binary: Calico v3.31.0's
// calico-cni-plugin ClusterRole from its policy-only manifest, plus the
// read of ClusterInformation its binary makes at every ADD (datastore
// ready?), which that manifest grants through the calico-node role.
const calicoCNIRBAC = `apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-cni-plugin, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: calico-cni-plugin}
rules:
  - apiGroups: [""]
    resources: [pods, nodes, namespaces]
    verbs: [get]
  - apiGroups: [""]
    resources: [pods/status]
    verbs: [patch]
  - apiGroups: [crd.projectcalico.org]
    resources: [clusterinformations]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: calico-cni-plugin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: calico-cni-plugin}
subjects:
  - {kind: ServiceAccount, name: calico-cni-plugin, namespace: kube-system}
`

// CalicoCNIKubeconfig creates the identity Calico's own calico binary runs
// as (calicoCNIRBAC) and writes a kubeconfig for it to path. Calico's CRDs
// must be installed (InstallCalicoCRDs).
func (cp *ControlPlane) CalicoCNIKubeconfig(ctx context.Context, path string) error {
	rbac := filepath.Join(cp.Dir, "calico-cni-rbac.yaml")
	if err := os.WriteFile(rbac, []byte(calicoCNIRBAC), 0o644); err != nil {
		return err
	}
	if err := cp.ApplyManifest(ctx, rbac, false); err != nil {
		return err
	}
	return cp.ServiceAccountKubeconfig(ctx, path, "kube-system", "calico-cni-plugin", 86400)
}

// FelixOptions configure one Felix.
type FelixOptions struct {
	// Node is Felix's hostname: the Node name the pods are bound to.
	Node string
	// IPv6 turns on Felix's IPv6 support.
	IPv6 bool
	// NFTables selects Felix's nftables dataplane (else iptables, nft backend).
	NFTables bool
	// StatusPrefix is where Felix writes endpoint-status/ (required).
	StatusPrefix string
	// HealthPort for /readiness on the node's loopback (default 9099).
	HealthPort int
	// Env is appended to the environment.
	Env []string
}

// Felix is a running calico-felix. Like calico-node's supervisor, it
// restarts Felix when Felix exits to reload its configuration (exit code
// 129, e.g. when its Node appears after it started).
type Felix struct {
	cp     *ControlPlane
	calico string
	opts   FelixOptions
	mu     sync.Mutex
	cur    *Process
	done   bool
	// Restarts counts configuration reloads.
	Restarts   int
	restartErr error
}

// StartFelix runs calico-felix in KDD policy-only mode in the node
// namespace, in a private mount namespace with a tmpfs over /var/lib (it
// writes /var/lib/calico), and waits for it to report ready.
func (cp *ControlPlane) StartFelix(ctx context.Context, calico string, o FelixOptions) (*Felix, error) {
	if o.HealthPort == 0 {
		o.HealthPort = 9099
	}
	f := &Felix{cp: cp, calico: calico, opts: o}
	if err := f.spawn(); err != nil {
		return nil, err
	}
	cp.onStop = append(cp.onStop, func() { _ = f.Stop(15 * time.Second) })
	url := fmt.Sprintf("http://127.0.0.1:%d/readiness", o.HealthPort)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: cp.launcher.dial}}
	err := waitFor(ctx, 60*time.Second, f.process(), func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		_ = f.Stop(5 * time.Second)
		return nil, fmt.Errorf("felix not ready: %w\n%s", err, f.Tail(4000))
	}
	return f, nil
}

func (f *Felix) env() []string {
	o := f.opts
	mode := "Disabled"
	if o.NFTables {
		mode = "Enabled"
	}
	env := append(os.Environ(),
		"FELIX_DATASTORETYPE=kubernetes", "KUBECONFIG="+f.cp.AdminKubeconfig,
		"FELIX_FELIXHOSTNAME="+o.Node, "USE_POD_CIDR=true", "FELIX_ROUTESOURCE=WorkloadIPs",
		"FELIX_IPINIPENABLED=false", "FELIX_VXLANENABLED=false", "FELIX_WIREGUARDENABLED=false",
		"FELIX_BPFENABLED=false", fmt.Sprintf("FELIX_IPV6SUPPORT=%t", o.IPv6),
		"FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT", "FELIX_USAGEREPORTINGENABLED=false",
		"FELIX_HEALTHENABLED=true", "FELIX_HEALTHHOST=127.0.0.1", fmt.Sprintf("FELIX_HEALTHPORT=%d", o.HealthPort),
		"FELIX_NFTABLESMODE="+mode, "FELIX_IPTABLESBACKEND=nft",
		"FELIX_ENDPOINTSTATUSPATHPREFIX="+o.StatusPrefix, "FELIX_LOGSEVERITYSCREEN=info",
		"FELIX_LOGFILEPATH=none", "FELIX_LOGSEVERITYSYS=none",
		// A static build has no libbpf; this skips the BPF clean-up that needs it.
		"FELIX_DebugSkipCTLBCleanup=true")
	return append(env, o.Env...)
}

// spawn starts one Felix process and restarts it when it exits with 129.
func (f *Felix) spawn() error {
	cmd := exec.Command("/bin/sh", "-c", `mount -t tmpfs kdd-felix /var/lib && exec "$0"`, filepath.Join(f.calico, "calico-felix"))
	cmd.Env = f.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	p, err := startCmd(f.cp.launcher, f.cp.Dir, "felix-"+f.opts.Node, cmd)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.cur = p
	stopped := f.done
	f.mu.Unlock()
	if stopped { // Stop ran while this restart was starting
		return p.stop(5 * time.Second)
	}
	go func() {
		<-p.exited
		var exit *exec.ExitError
		f.mu.Lock()
		restart := !f.done && errors.As(p.waitErr, &exit) && exit.ExitCode() == 129
		if restart {
			f.Restarts++
		}
		f.mu.Unlock()
		if restart {
			if err := f.spawn(); err != nil {
				f.mu.Lock()
				f.restartErr = err
				f.mu.Unlock()
			}
		}
	}()
	return nil
}

func (f *Felix) process() *Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Stop ends Felix for good.
func (f *Felix) Stop(grace time.Duration) error {
	f.mu.Lock()
	f.done = true
	p := f.cur
	f.mu.Unlock()
	return p.stop(grace)
}

// Tail is the end of Felix's log (all its runs).
func (f *Felix) Tail(n int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%s\n(restarts: %d, last restart error: %v)", f.cur.tail(n), f.Restarts, f.restartErr)
}

// StatusDir is where Felix writes one file per endpoint that is up.
func (f *Felix) StatusDir() string { return filepath.Join(f.opts.StatusPrefix, "endpoint-status") }

// FelixStatusFile is the name of the file Felix writes in its endpoint
// status directory for a Kubernetes pod's endpoint: the orchestrator,
// "<namespace>/<pod>" and the endpoint, each path-escaped, joined by
// spaces (stated here apart from the plugin's own copy, so a test holds
// the plugin to Felix's naming).
func FelixStatusFile(namespace, pod string) string {
	return "k8s " + url.PathEscape(namespace+"/"+pod) + " eth0"
}
