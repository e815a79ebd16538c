// Command demo is the README's main job: it starts a real etcd and
// kube-apiserver on the loopback of a "node" network namespace, creates a
// Node with a podCIDR and two Pods, and wires two pod namespaces with the
// real `calico` plugin through cnitool and the shipped conflist template,
// using the least-privilege CNI identity. It shows the WorkloadEndpoint
// annotations, pings one pod from the other, and tears everything down.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

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
	step("minting a TokenRequest token for kube-system/%s (RBAC from conf/manifests/rbac-cni.yaml)", harness.CNIServiceAccount)
	kubeconfig := filepath.Join(work, "calico-kubeconfig")
	if err := cp.CNIKubeconfig(ctx, kubeconfig, 3600); err != nil {
		return err
	}
	netDir := filepath.Join(work, "net.d")
	leaseDir := filepath.Join(work, "leases")
	if err := renderConflist(netDir, kubeconfig, filepath.Join(work, "cni.log"), leaseDir); err != nil {
		return err
	}
	fmt.Printf("conflist written to %s/10-calico.conflist\n", netDir)

	pods := map[string]*harness.NetNS{}
	for _, p := range []string{"frontend", "backend"} {
		ns, err := harness.NewNetNS("pod")
		if err != nil {
			return err
		}
		defer ns.Close()
		pods[p] = ns
		step("cnitool add k8s-pod-network %s   (pod default/%s)", ns.Path, p)
		out, err := cnitool(cp, bin, netDir, p, "add", ns.Path)
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

	step("ping %s (backend) from the frontend pod, through the node", backendIP)
	t0 := time.Now()
	if err := pods["frontend"].Ping(backendIP, 5*time.Second); err != nil {
		return err
	}
	fmt.Printf("reply from %s in %s\n", backendIP, time.Since(t0).Round(time.Microsecond))

	for _, p := range []string{"frontend", "backend"} {
		step("cnitool check + del (pod default/%s)", p)
		for _, verb := range []string{"check", "del"} {
			if _, err := cnitool(cp, bin, netDir, p, verb, pods[p].Path); err != nil {
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

// renderConflist fills the shipped template's placeholders for this demo and
// keeps host-local's leases in the demo's own directory.
func renderConflist(dir, kubeconfig, logFile, leaseDir string) error {
	tmpl, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "conf", "10-calico.conflist.template"))
	if err != nil {
		return err
	}
	out := strings.NewReplacer(
		"__LOG_LEVEL__", "info", "__LOG_FILE_PATH__", logFile, "__DATASTORE_TYPE__", "kubernetes",
		"__KUBERNETES_NODE_NAME__", node, "__CNI_MTU__", "1500", "__KUBECONFIG_FILEPATH__", kubeconfig,
	).Replace(string(tmpl))
	var list struct {
		Name       string           `json:"name"`
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return fmt.Errorf("rendered conflist is not valid JSON: %w", err)
	}
	list.Plugins[0]["ipam"].(map[string]any)["dataDir"] = leaseDir
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "10-calico.conflist"), b, 0o600)
}

// cnitool runs the real cnitool inside the node namespace, as a runtime would.
func cnitool(cp *harness.ControlPlane, bin, netDir, pod, verb, netns string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "cnitool"), verb, "k8s-pod-network", netns)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+netDir, "CNI_PATH="+bin,
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME="+pod)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cp.Run(cmd); err != nil {
		return out.String(), fmt.Errorf("cnitool %s for %s: %w\n%s", verb, pod, err, out.String())
	}
	return out.String(), nil
}
