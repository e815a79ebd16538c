package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// node is a single-node cluster's node: containerd + kubelet in the node
// network namespace, with kdd-cni installed by install-cni.
type node struct {
	t            *testing.T
	name         string
	dir          string
	hostRoot     string // what install-cni sees as the host's /
	sock         string
	leases       string
	stateDir     string
	cgroupRoot   string
	runtime      containerRuntime
	containerd   *harness.Process
	kubelet      *harness.Process
	kubeProxy    *harness.Process
	netnsAtStart map[string]bool
	started      time.Time // when the node was made (its shims' sockets are newer)
	// host is the machine of a node of the two-node cluster (nil: the
	// single node, in the control plane's namespace).
	host   *harness.Host
	images []string // archives imported into containerd
	// ipv6Primary: the host's kubelet reports its IPv6 address first, so
	// status.hostIP (the DaemonSet's NODE_IP) is IPv6.
	ipv6Primary bool
	// containerLogsCreated: the kubelet's fixed /var/log/containers did not
	// exist before this node (a host node has its own).
	containerLogsCreated bool
}

// netDir and binDir are the CNI directories as the node's daemons see them.
func (n *node) netDir() string {
	if n.host != nil {
		return "/etc/cni/net.d"
	}
	return filepath.Join(n.hostRoot, "etc/cni/net.d")
}

func (n *node) binDir() string {
	if n.host != nil {
		return "/opt/cni/bin"
	}
	return filepath.Join(n.hostRoot, "opt/cni/bin")
}

// startProcess starts a daemon on the node.
func (n *node) startProcess(name, bin string, args ...string) (*harness.Process, error) {
	if n.host != nil {
		return n.host.StartProcess(name, bin, args...)
	}
	return cp.StartProcess(name, bin, args...)
}

// do runs fn in the node's network namespace.
func (n *node) do(fn func() error) error {
	if n.host != nil {
		return n.host.Do(fn)
	}
	return cp.DoInNode(fn)
}

// nodeIP is the node's primary address (the first the kubelet reports).
func (n *node) nodeIP() string { return n.nodeIPs()[0] }

// nodeIPs are the addresses the kubelet reports (--node-ip), primary first.
func (n *node) nodeIPs() []string {
	switch {
	case n.host == nil:
		return []string{harness.NodeIP.IP.String()}
	case n.ipv6Primary: // dual-stack, IPv6 first
		return []string{n.host.IP6.String(), n.host.IP.String()}
	default:
		return []string{n.host.IP.String()}
	}
}

// startHostNode starts containerd and the kubelet on a cluster host; the
// kdd-cni DaemonSet installs the CNI. The images are imported.
func startHostNode(t *testing.T, h *harness.Host, rt containerRuntime, ipv6Primary bool, images ...string) *node {
	n := &node{t: t, name: h.Name, dir: filepath.Join(h.Dir, "node"), host: h, runtime: rt, ipv6Primary: ipv6Primary,
		sock: h.Root("/run/containerd/containerd.sock"), leases: filepath.Join(h.Root("/var/lib/cni"), "networks"),
		stateDir: h.Root("/var/lib/kdd-cni"), cgroupRoot: fmt.Sprintf("/kddcni-e2e-%d-%s", os.Getpid(), h.Name),
		netnsAtStart: netnsNames(), started: time.Now()}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.teardown)
	n.startContainerd(images...)
	n.startKubelet()
	return n
}

// startNodeWith starts a node on runtime rt whose conflist carries extra
// netconf keys.
func startNodeWith(t *testing.T, name string, rt containerRuntime, extra map[string]any) *node {
	dir, err := os.MkdirTemp("", "kddcni-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: name, dir: dir, runtime: rt, hostRoot: filepath.Join(dir, "host"), sock: filepath.Join(dir, "containerd.sock"),
		leases: filepath.Join(dir, "leases"), stateDir: filepath.Join(dir, "state"),
		cgroupRoot: fmt.Sprintf("/kddcni-e2e-%d-%s", os.Getpid(), name), netnsAtStart: netnsNames(), started: time.Now()}
	if _, err := os.Stat(containerLogs); os.IsNotExist(err) {
		n.containerLogsCreated = true
	}
	t.Cleanup(n.teardown)
	// As with the DaemonSet: the kubelet registers the Node (NotReady, no
	// CNI yet), install-cni binds the CNI token to that Node and installs,
	// and the node turns Ready.
	n.startContainerd()
	n.startKubelet()
	n.installCNI(extra)
	n.waitReady()
	return n
}

// installCNI runs install-cni from the image tree with the manifests' RBAC
// and its own (minting-only) identity, as the DaemonSet would.
func (n *node) installCNI(extra map[string]any) {
	ctx := context.Background()
	for _, m := range []string{"rbac-cni.yaml", "rbac-install.yaml", "admission-node-scope.yaml"} {
		if err := cp.ApplyManifest(ctx, harness.Manifest(m), false); err != nil {
			n.t.Fatal(err)
		}
	}
	kc := filepath.Join(n.dir, "installer.kubeconfig")
	if err := cp.ServiceAccountKubeconfig(ctx, kc, "kube-system", "kdd-cni-node", 3600); err != nil {
		n.t.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join(rootfs, "etc/kdd-cni/10-calico.conflist.template"))
	if err != nil {
		n.t.Fatal(err)
	}
	calico := map[string]any{"state_dir": n.stateDir}
	for k, v := range extra {
		calico[k] = v
	}
	conf, err := harness.TemplateWith(tmpl, calico, map[string]any{"dataDir": n.leases})
	if err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(rootfs, "opt/cni/bin/install-cni"))
	cmd.Env = []string{
		"CNI_HOST_ROOT=" + n.hostRoot, "CNI_BIN_SRC_DIR=" + filepath.Join(rootfs, "opt/cni/bin"),
		"CNI_NET_DIR=" + n.netDir(), "CNI_NETWORK_CONFIG=" + conf, "KUBECONFIG=" + kc,
		"POD_NAMESPACE=kube-system", "KUBERNETES_NODE_NAME=" + n.name, "SLEEP=false",
		"LOG_LEVEL=debug", "LOG_FILE_PATH=" + filepath.Join(n.dir, "cni.log"),
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cp.Run(cmd); err != nil {
		n.t.Fatalf("install-cni: %v\n%s", err, out.String())
	}
}

func (n *node) startContainerd(extraImages ...string) {
	cfg := n.runtime.config(filepath.Join(n.dir, "containerd-root"), filepath.Join(n.dir, "containerd-state"), n.sock, Image,
		filepath.Join(n.dir, "runc"), n.binDir(), n.netDir())
	path := filepath.Join(n.dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
	var err error
	bin, args := n.runtime.command(path)
	if n.containerd, err = n.startProcess("containerd", bin, args...); err != nil {
		n.t.Fatal(err)
	}
	n.waitFor("containerd socket", 30*time.Second, func() bool {
		return exec.Command(n.runtime.bin("ctr"), "-a", n.sock, "version").Run() == nil
	})
	n.images = append([]string{image}, extraImages...)
	for _, img := range n.images {
		if out, err := exec.Command(n.runtime.bin("ctr"), "-a", n.sock, "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", img).CombinedOutput(); err != nil {
			n.t.Fatalf("import image %s: %v\n%s", img, err, out)
		}
	}
}

// makeCgroupRoot creates the kubelet's cgroup root in every v1 hierarchy
// (a new cpuset starts empty: give it the parent's CPUs and memory nodes).
func (n *node) makeCgroupRoot() {
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hierarchies {
		base := filepath.Join("/sys/fs/cgroup", h.Name())
		if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(base, n.cgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			n.t.Fatalf("create cgroup %s: %v", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(base, f)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
		}
	}
}

func (n *node) startKubelet() {
	n.makeCgroupRoot()
	kc, err := cp.NodeKubeconfig(n.name)
	if err != nil {
		n.t.Fatal(err)
	}
	root := filepath.Join(n.dir, "kubelet")
	// A cluster host's kubelet serves the apiserver (pods/exec) on its
	// node addresses (both families), to clients with a certificate of the
	// cluster CA.
	// Its pods resolve names through the cluster DNS (kube-dns, when a
	// test deploys it).
	address, x509, dns := "127.0.0.1", "", ""
	if n.host != nil {
		address, x509 = "::", "\n  x509: {clientCAFile: "+cp.CAFile()+"}"
		dns = fmt.Sprintf("clusterDNS: [%s]\nclusterDomain: %s\n", harness.ClusterDNS, harness.ClusterDomain)
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://%s
address: "%s"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}%s
authorization:
  mode: AlwaysAllow
resolvConf: ""
podLogsDir: %s
maxPods: 120
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
%s`, n.cgroupRoot, n.sock, address, x509, filepath.Join(n.dir, "pod-logs"), dns)
	path := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
	if n.kubelet, err = n.startProcess("kubelet", kubeletBin, "--config="+path, "--kubeconfig="+kc,
		"--root-dir="+root, "--hostname-override="+n.name, "--node-ip="+strings.Join(n.nodeIPs(), ","), "--v=1"); err != nil {
		n.t.Fatal(err)
	}
	n.waitFor("node registered with a podCIDR", 90*time.Second, func() bool {
		nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
		return err == nil && len(nd.Spec.PodCIDRs) > 0
	})
}

// startKubeProxy runs kube-proxy on the node (iptables mode: the same
// netfilter backend, iptables-nft, as Felix), leaving conntrack sysctls,
// which are not the node's own, alone.
func (n *node) startKubeProxy() {
	kc, err := cp.KubeProxyKubeconfig()
	if err != nil {
		n.t.Fatal(err)
	}
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: iptables
clusterCIDR: 10.244.0.0/16
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, kc, n.name)
	path := filepath.Join(n.dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
	tools, err := harness.ToolsDir()
	if err != nil {
		n.t.Fatal(err)
	}
	if n.kubeProxy, err = n.startProcess("kube-proxy", filepath.Join(tools, "kube-proxy"), "--config="+path, "--v=1"); err != nil {
		n.t.Fatal(err)
	}
}

// waitReady waits for the kubelet to report the node Ready (the CNI is in place).
func (n *node) waitReady() {
	n.waitFor("node Ready", 90*time.Second, func() bool {
		nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range nd.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

func (n *node) waitFor(what string, timeout time.Duration, ok func() bool) {
	n.t.Helper()
	err := harness.Poll(timeout, 100*time.Millisecond, func() error {
		for _, p := range []*harness.Process{n.kubelet, n.containerd} {
			if p != nil && !p.Running() {
				n.t.Fatalf("waiting for %s: a daemon exited:\n%s", what, p.Tail(4000))
			}
		}
		if !ok() {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		n.t.Fatalf("timed out waiting for %s\n--- kubelet ---\n%s\n--- containerd ---\n%s%s", what, tail(n.kubelet), tail(n.containerd), n.kddLogs())
	}
}

// kddLogs is the end of each kdd-cni container's log on the node (the
// kubelet's pod logs): why an install-cni crash-loops, say.
func (n *node) kddLogs() string {
	logs, _ := filepath.Glob(filepath.Join(n.dir, "pod-logs", "kube-system_kdd-cni-node-*", "*", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		fmt.Fprintf(&b, "\n--- %s ---\n%s", strings.TrimPrefix(l, n.dir), data)
	}
	return b.String()
}

func tail(p *harness.Process) string {
	if p == nil {
		return ""
	}
	return p.Tail(4000)
}

// restartContainerd and restartKubelet stop and start the daemons.
func (n *node) restartContainerd() {
	if err := n.containerd.Stop(20 * time.Second); err != nil {
		n.t.Fatal(err)
	}
	n.startContainerd(n.images[1:]...)
}

func (n *node) restartKubelet() {
	if err := n.kubelet.Stop(20 * time.Second); err != nil {
		n.t.Fatal(err)
	}
	n.startKubelet()
	n.waitReady()
}

// teardown removes everything, also after a failure: pods (so the kubelet
// runs CNI DEL), the kubelet, leftover containers, containerd, mounts,
// namespaces and cgroups. Processes are ended by PID.
func (n *node) teardown() {
	ctx := context.Background()
	if n.kubelet != nil && n.kubelet.Running() {
		pods, _ := cp.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		zero := int64(0)
		for _, p := range pods.Items {
			_ = cp.Admin.CoreV1().Pods(namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}
		_ = harness.Poll(60*time.Second, 200*time.Millisecond, func() error {
			if l, err := cp.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) > 0 {
				return errors.New("pods left")
			}
			return nil
		})
		_ = n.kubelet.Stop(20 * time.Second)
	}
	// Containers the kubelet did not stop: kill them through runc, then
	// the shims our containerd started (found by its socket address).
	runcRoot := filepath.Join(n.dir, "runc", "k8s.io")
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("runc", "--root", runcRoot, "kill", id, "KILL").Run()
			_ = exec.Command("runc", "--root", runcRoot, "delete", "--force", id).Run()
		}
	}
	if n.kubeProxy != nil {
		_ = n.kubeProxy.Stop(10 * time.Second)
	}
	if n.containerd != nil {
		_ = n.containerd.Stop(20 * time.Second)
	}
	for _, pid := range pidsWithArg(n.sock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Whatever still runs in the kubelet's cgroups (a container whose shim
	// is gone) is ours too.
	killCgroup(n.cgroupRoot)
	harness.UnmountUnder(n.dir)
	for name := range netnsNames() {
		if !n.netnsAtStart[name] && strings.HasPrefix(name, "cni-") {
			_ = syscall.Unmount(filepath.Join("/run/netns", name), syscall.MNT_DETACH)
			_ = os.Remove(filepath.Join("/run/netns", name))
		}
	}
	removeCgroups(n.cgroupRoot)
	removeContainerLogLinks(n.dir, n.containerLogsCreated)
	removeDeadShimSockets(n.started)
	// A node that is gone is not NotReady: later tests wait for all nodes.
	_ = cp.Admin.CoreV1().Nodes().Delete(ctx, n.name, metav1.DeleteOptions{})
	if err := os.RemoveAll(n.dir); err != nil {
		n.t.Errorf("remove %s: %v", n.dir, err)
	}
}

// shimSockets is where containerd 1.6 and 2.x put their shims' sockets, whatever
// its state dir (a node on a Host has its own /run/containerd).
const shimSockets = "/run/containerd/s"

// removeDeadShimSockets removes the sockets our killed shims left: those
// made since the node started that no process listens on any more.
func removeDeadShimSockets(since time.Time) {
	entries, _ := os.ReadDir(shimSockets)
	for _, e := range entries {
		p := filepath.Join(shimSockets, e.Name())
		fi, err := e.Info()
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.ModTime().Before(since) {
			continue
		}
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			c.Close()
			continue
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			continue
		}
		_ = os.Remove(p)
	}
}

func netnsNames() map[string]bool {
	m := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m
}

// pidsWithArg lists processes whose command line contains arg.
func pidsWithArg(arg string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), arg) && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// containerLogs is where every kubelet links its containers' logs (fixed).
const containerLogs = "/var/log/containers"

// removeContainerLogLinks removes the kubelet's links into dir (its pod
// logs) from the fixed /var/log/containers, and the directory itself when
// the node made it and it is empty.
func removeContainerLogLinks(dir string, created bool) {
	entries, _ := os.ReadDir(containerLogs)
	for _, e := range entries {
		p := filepath.Join(containerLogs, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, dir+"/") {
			_ = os.Remove(p)
		}
	}
	if created {
		_ = os.Remove(containerLogs) // only if empty
	}
}

// killCgroup SIGKILLs every process in the cgroup tree root and waits
// (briefly) until none is left.
func killCgroup(root string) {
	base := filepath.Join("/sys/fs/cgroup", "pids", root)
	for range 50 {
		var pids []int
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					var pid int
					if _, err := fmt.Sscan(f, &pid); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the kubelet's cgroup tree in every v1 hierarchy.
func removeCgroups(root string) {
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hierarchies {
		base := filepath.Join("/sys/fs/cgroup", h.Name(), root)
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	}
}
