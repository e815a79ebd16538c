// Command demo is the README's main job: it starts a real etcd and
// kube-apiserver on the loopback of a "node" network namespace, creates a
// Node with a podCIDR and two Pods, installs kdd-cni with install-cni from
// the image tree (as the DaemonSet would), and wires two pod namespaces
// through cnitool with the installed conflist, binaries and least-privilege
// kubeconfig. It shows the WorkloadEndpoints and pings one pod from the
// other; then Calico's Felix (v3.31.0, KDD policy-only) starts in the node
// and enforces NetworkPolicy on those pods: a default-deny policy blocks the
// ping, an allow policy lets it through again. It tears everything down.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

const node = "demo-node"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo needs root (network namespaces)")
	}
	bin, err := harness.BinDir()
	if err != nil {
		return err
	}
	ctx := context.Background()
	step("starting etcd + kube-apiserver (pinned v1.37.2) in a node network namespace")
	start := time.Now()
	cp, err := harness.Start(ctx, harness.Options{})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the control plane and removing every namespace and file")
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop:", err)
		}
	}()
	fmt.Printf("apiserver ready at %s in %s (pids %v)\n", cp.URL, time.Since(start).Round(time.Millisecond), cp.PIDs())
	if err := cp.AddUplink(); err != nil {
		return err
	}

	step("creating Node %s (podCIDR 10.244.1.0/24) and Pods default/frontend, default/backend", node)
	if _, err := cp.CreateNode(ctx, node, "10.244.1.0/24"); err != nil {
		return err
	}
	for _, p := range []string{"frontend", "backend"} {
		if _, err := cp.CreatePod(ctx, "default", p, node); err != nil {
			return err
		}
	}

	work, err := os.MkdirTemp("", "kdd-cni-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	step("applying the manifests' RBAC: the CNI identity and install-cni's (may only mint the CNI token)")
	for _, m := range []string{"rbac-cni.yaml", "rbac-install.yaml", "admission-node-scope.yaml"} {
		if err := cp.ApplyManifest(ctx, harness.Manifest(m), false); err != nil {
			return err
		}
	}
	installerKC := filepath.Join(work, "installer.kubeconfig")
	if err := cp.ServiceAccountKubeconfig(ctx, installerKC, "kube-system", "kdd-cni-node", 3600); err != nil {
		return err
	}
	hostRoot := filepath.Join(work, "host")
	leaseDir := filepath.Join(work, "leases")
	step("install-cni (from the image tree build/rootfs) into %s", hostRoot)
	if err := installCNI(cp, hostRoot, installerKC, leaseDir); err != nil {
		return err
	}
	netDir := filepath.Join(hostRoot, "etc/cni/net.d")
	cniBin := filepath.Join(hostRoot, "opt/cni/bin")
	entries, _ := os.ReadDir(cniBin)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	fmt.Printf("binaries: %s\nconfig:   %s/10-calico.conflist, %s/calico-kubeconfig (TokenRequest token of kube-system/%s)\n",
		strings.Join(names, " "), netDir, netDir, harness.CNIServiceAccount)

	pods := map[string]*harness.NetNS{}
	for _, p := range []string{"frontend", "backend"} {
		ns, err := harness.NewNetNS("pod")
		if err != nil {
			return err
		}
		defer ns.Close()
		pods[p] = ns
		step("cnitool add k8s-pod-network %s   (pod default/%s)", ns.Path, p)
		out, err := cnitool(cp, bin, cniBin, netDir, p, "add", ns.Path)
		if err != nil {
			return err
		}
		fmt.Println(strings.TrimSpace(out))
	}

	step("the pods' WorkloadEndpoint annotations on the API server")
	var backendIP net.IP
	for _, p := range []string{"frontend", "backend"} {
		pod, err := cp.Admin.CoreV1().Pods("default").Get(ctx, p, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, k := range []string{"podIP", "podIPs", "containerID"} {
			fmt.Printf("%-9s cni.projectcalico.org/%-11s = %s\n", p, k, pod.Annotations["cni.projectcalico.org/"+k])
		}
		if p == "backend" {
			backendIP, _, _ = net.ParseCIDR(pod.Annotations["cni.projectcalico.org/podIP"])
		}
	}

	step("kddctl get workloadendpoints -o wide   (what calicoctl and Felix see)")
	out, err := kddctl(cp, bin, "get", "wep", "-o", "wide", "--kubeconfig", cp.AdminKubeconfig)
	if err != nil {
		return err
	}
	fmt.Print(out)
	step("kddctl check --kubeconfig %s/calico-kubeconfig", netDir)
	if out, err = kddctl(cp, bin, "check", "--kubeconfig", filepath.Join(netDir, "calico-kubeconfig")); err != nil {
		return err
	}
	fmt.Print(out)

	step("ping %s (backend) from the frontend pod, through the node", backendIP)
	t0 := time.Now()
	if err := pods["frontend"].Ping(backendIP, 5*time.Second); err != nil {
		return err
	}
	fmt.Printf("reply from %s in %s\n", backendIP, time.Since(t0).Round(time.Microsecond))

	if err := tryNetworkPolicy(ctx, cp, work, pods["frontend"], backendIP); err != nil {
		return err
	}

	for _, p := range []string{"frontend", "backend"} {
		step("cnitool check + del (pod default/%s)", p)
		for _, verb := range []string{"check", "del"} {
			if _, err := cnitool(cp, bin, cniBin, netDir, p, verb, pods[p].Path); err != nil {
				return err
			}
		}
		pod, err := cp.Admin.CoreV1().Pods("default").Get(ctx, p, metav1.GetOptions{})
		if err != nil {
			return err
		}
		fmt.Printf("podIP annotation after DEL: %q\n", pod.Annotations["cni.projectcalico.org/podIP"])
	}
	leases, _ := filepath.Glob(filepath.Join(leaseDir, "k8s-pod-network", "10.244.1.*"))
	fmt.Printf("host-local leases left: %d\n", len(leases))
	if len(leases) > 0 {
		return fmt.Errorf("leases leaked: %v", leases)
	}
	return nil
}

// tryNetworkPolicy is the seeds' "try out NetworkPolicy" on the demo's
// pods: Felix, reading only the API, programs the node; a default-deny
// ingress policy in the pods' namespace blocks the frontend's ping to the
// backend; a policy allowing ingress to the backend from app=frontend lets
// it through. Each step waits for Felix and says how long it took.
func tryNetworkPolicy(ctx context.Context, cp *harness.ControlPlane, work string, frontend *harness.NetNS, backendIP net.IP) error {
	calico, err := harness.CalicoDir()
	if err != nil {
		return err
	}
	step("starting Calico's Felix (v3.31.0, KDD policy-only, reading only the API) in the node")
	if err := cp.InstallCalicoCRDs(ctx); err != nil {
		return err
	}
	status := filepath.Join(work, "felix")
	if err := os.MkdirAll(status, 0o755); err != nil {
		return err
	}
	t0 := time.Now()
	felix, err := cp.StartFelix(ctx, calico, harness.FelixOptions{Node: node, StatusPrefix: status})
	if err != nil {
		return err
	}
	if err := waitUntil(20*time.Second, func() bool {
		e, _ := filepath.Glob(filepath.Join(felix.StatusDir(), "*"))
		return len(e) == 2
	}); err != nil {
		return fmt.Errorf("felix did not report both pods' endpoints up: %w\n%s", err, felix.Tail(3000))
	}
	fmt.Printf("Felix ready, both WorkloadEndpoints up, in %s\n", time.Since(t0).Round(time.Millisecond))
	if err := frontend.Ping(backendIP, 5*time.Second); err != nil {
		return fmt.Errorf("ping before any policy: %w", err)
	}
	fmt.Printf("no policy yet: frontend → backend %s answers\n", backendIP)

	policies := cp.Admin.NetworkingV1().NetworkPolicies("default")
	step("kubectl apply: NetworkPolicy default/default-deny (every pod, ingress, no rule)")
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny"}, Spec: networkingv1.NetworkPolicySpec{
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := policies.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		return err
	}
	t0 = time.Now()
	if err := waitUntil(20*time.Second, func() bool { return frontend.Ping(backendIP, 500*time.Millisecond) != nil }); err != nil {
		return fmt.Errorf("the default-deny policy never blocked the ping: %w\n%s", err, felix.Tail(3000))
	}
	fmt.Printf("frontend → backend %s: no reply (blocked by Felix within %s of the apply)\n", backendIP, time.Since(t0).Round(time.Millisecond))

	step("kubectl apply: NetworkPolicy default/allow-frontend (ingress to app=backend from app=frontend)")
	from := metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}}
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-frontend"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &from}}}}}}
	if _, err := policies.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		return err
	}
	t0 = time.Now()
	if err := frontend.Ping(backendIP, 20*time.Second); err != nil {
		return fmt.Errorf("the allow policy never let the ping through: %w\n%s", err, felix.Tail(3000))
	}
	fmt.Printf("frontend → backend %s answers again (allowed within %s of the apply)\n", backendIP, time.Since(t0).Round(time.Millisecond))

	step("stopping Felix; deleting the policies")
	for _, name := range []string{"default-deny", "allow-frontend"} {
		if err := policies.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return felix.Stop(10 * time.Second)
}

// waitUntil polls ok every 200 ms until it holds or within passes.
func waitUntil(within time.Duration, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("still not so after %s", within)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// installCNI runs install-cni from the image tree as the DaemonSet's init
// container would, with its own (minting-only) identity. The demo keeps
// host-local's leases in its own directory.
func installCNI(cp *harness.ControlPlane, hostRoot, kubeconfig, leaseDir string) error {
	rootfs, err := harness.RootFS()
	if err != nil {
		return err
	}
	tmpl, err := os.ReadFile(filepath.Join(rootfs, "etc/kdd-cni/10-calico.conflist.template"))
	if err != nil {
		return err
	}
	conf, err := harness.TemplateWith(tmpl, map[string]any{"state_dir": filepath.Join(filepath.Dir(leaseDir), "state")},
		map[string]any{"dataDir": leaseDir})
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(rootfs, "opt/cni/bin/install-cni"))
	cmd.Env = []string{
		"CNI_HOST_ROOT=" + hostRoot, "CNI_BIN_SRC_DIR=" + filepath.Join(rootfs, "opt/cni/bin"),
		"CNI_NET_DIR=" + filepath.Join(hostRoot, "etc/cni/net.d"), "CNI_NETWORK_CONFIG=" + conf,
		"KUBECONFIG=" + kubeconfig, "POD_NAMESPACE=kube-system", "KUBERNETES_NODE_NAME=" + node,
		"SLEEP=false", "LOG_FILE_PATH=" + filepath.Join(hostRoot, "var/log/cni.log"),
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cp.Run(cmd); err != nil {
		return fmt.Errorf("install-cni: %w\n%s", err, out.String())
	}
	return nil
}

func kddctl(cp *harness.ControlPlane, bin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "kddctl"), args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cp.Run(cmd); err != nil {
		return out.String(), fmt.Errorf("kddctl %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// cnitool runs the real cnitool inside the node namespace, as a runtime would.
func cnitool(cp *harness.ControlPlane, bin, cniBin, netDir, pod, verb, netns string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "cnitool"), verb, "k8s-pod-network", netns)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+netDir, "CNI_PATH="+cniBin,
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+pod)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cp.Run(cmd); err != nil {
		return out.String(), fmt.Errorf("cnitool %s for %s: %w\n%s", verb, pod, err, out.String())
	}
	return out.String(), nil
}
