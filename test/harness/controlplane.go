// Package harness runs real Kubernetes parts for kdd-cni's tests and demo:
// etcd and kube-apiserver (and optionally kube-controller-manager) built from
// pinned modules, started on the loopback of a dedicated "node" network
// namespace. Everything the plugin touches on a node (host veths, host routes,
// sysctls) then lives in that namespace, never on the real host.
package harness

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options selects what Start runs.
type Options struct {
	// ControllerManager also starts kube-controller-manager with the nodeipam
	// and serviceaccount controllers, so Nodes get podCIDRs the real way.
	ControllerManager bool
	// ClusterCIDR for nodeipam (default 10.244.0.0/16).
	ClusterCIDR string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags.
	ExtraAPIServerArgs []string
	// Cluster makes a control plane for nodes in their own network
	// namespaces (AddHost): the apiserver listens on the cluster network's
	// gateway too (ClusterGateway, a bridge in the control plane's
	// namespace) and is the kubernetes Service's endpoint (lease
	// reconciler), pods get service account tokens (ServiceAccount
	// admission), and kube-scheduler and the controllers of workloads and
	// Services run (DaemonSet, Deployment, ReplicaSet, StatefulSet, Endpoints,
	// EndpointSlice and its mirroring, ServiceCIDR). Implies ControllerManager.
	Cluster bool
}

const (
	etcdPort      = 2379
	etcdPeerPort  = 2380
	apiserverPort = 6443
	// ServiceCIDR is the service range the apiserver is started with.
	ServiceCIDR = "10.0.0.0/24"
	// ClusterDNS is the cluster DNS Service's address (kube-dns), which
	// cluster hosts' kubelets give pods; ClusterDomain its domain.
	ClusterDNS    = "10.0.0.10"
	ClusterDomain = "cluster.local"
)

// ControlPlane is a running etcd + kube-apiserver (+ controller-manager).
type ControlPlane struct {
	// Dir holds certificates, kubeconfigs, data and logs; removed by Stop.
	Dir string
	// Node is the network namespace the control plane (and the plugin under
	// test) runs in: it plays the Kubernetes node.
	Node *NetNS
	// URL of the apiserver as seen from inside Node.
	URL string
	// CAPEM is the cluster CA certificate.
	CAPEM []byte
	// AdminConfig and Admin act as cluster-admin (system:masters).
	AdminConfig *rest.Config
	Admin       kubernetes.Interface
	// AdminKubeconfig is a kubeconfig file with the admin identity.
	AdminKubeconfig string

	pki          *pki
	launcher     *launcher
	processes    []*Process
	onStop       []func() // run first by Stop (supervised processes)
	mu           sync.Mutex
	createdPaths []string // empty mount points made for Hosts
	tools        string
	opts         Options
}

// Start brings up a control plane. The caller must call Stop, also on error
// paths after Start returned successfully.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	sweepStale()
	tools, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-cp-", nsPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{Dir: dir, URL: fmt.Sprintf("https://127.0.0.1:%d", apiserverPort)}
	if opts.Cluster {
		opts.ControllerManager = true
		cp.URL = fmt.Sprintf("https://%s:%d", ClusterGateway.IP, apiserverPort)
	}
	defer func() {
		if err != nil {
			_ = cp.Stop()
			cp = nil
		}
	}()
	if cp.Node, err = NewNetNS("node"); err != nil {
		return cp, err
	}
	if cp.launcher, err = newLauncher(cp.Node); err != nil {
		return cp, err
	}
	if opts.Cluster {
		if err := cp.addClusterBridge(); err != nil {
			return cp, err
		}
	}
	if err := cp.writeCredentials(); err != nil {
		return cp, err
	}
	if err := cp.startEtcd(ctx, tools); err != nil {
		return cp, err
	}
	cp.tools, cp.opts = tools, opts
	if err := cp.startAPIServer(ctx, tools, opts); err != nil {
		return cp, err
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(tools, opts); err != nil {
			return cp, err
		}
	}
	if opts.Cluster {
		if err := cp.startScheduler(tools); err != nil {
			return cp, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) writeCredentials() error {
	var err error
	if cp.pki, err = newPKI(cp.Dir); err != nil {
		return err
	}
	cp.CAPEM = cp.pki.CAPEM
	if _, _, err = cp.pki.issue("apiserver", "kube-apiserver", nil,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1"), ClusterGateway.IP},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	if _, _, err = cp.pki.serviceAccountKey(); err != nil {
		return err
	}
	adminCert, adminKey, err := cp.pki.issue("admin", "kdd-cni-admin", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	cp.AdminKubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := cp.writeCertKubeconfig(cp.AdminKubeconfig, adminCert, adminKey); err != nil {
		return err
	}
	cp.AdminConfig = &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CAPEM, CertFile: adminCert, KeyFile: adminKey},
		QPS:             200,
		Burst:           400,
		Dial:            cp.launcher.dial,
		UserAgent:       "kdd-cni-harness",
	}
	cp.Admin, err = kubernetes.NewForConfig(cp.AdminConfig)
	return err
}

func (cp *ControlPlane) writeCertKubeconfig(path, cert, key string) error {
	return cp.writeKubeconfig(path, &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key})
}

func (cp *ControlPlane) writeKubeconfig(path string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: cp.CAPEM}
	cfg.AuthInfos["user"] = auth
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user"}
	cfg.CurrentContext = "default"
	return clientcmd.WriteToFile(*cfg, path)
}

func (cp *ControlPlane) startEtcd(ctx context.Context, tools string) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	p, err := startProcess(cp.launcher, cp.Dir, "etcd", filepath.Join(tools, "etcd"),
		"--name=kdd-cni", "--data-dir="+filepath.Join(cp.Dir, "etcd-data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kdd-cni="+peer, "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	cp.processes = append(cp.processes, p)
	hc := &http.Client{Transport: &http.Transport{DialContext: cp.launcher.dial}, Timeout: 2 * time.Second}
	return waitFor(ctx, 30*time.Second, p, func() bool {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, tools string, opts Options) error {
	d := cp.Dir
	args := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--tls-cert-file=" + filepath.Join(d, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(d, "apiserver.key"),
		"--client-ca-file=" + cp.pki.CAFile,
		"--service-account-key-file=" + filepath.Join(d, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(d, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--allow-privileged=true",
		"--cert-dir=" + filepath.Join(d, "apiserver-certs"),
		"--disable-admission-plugins=ServiceAccount",
		"--audit-policy-file=" + filepath.Join(d, "audit-policy.yaml"),
		"--audit-log-path=" + cp.auditLog(), "--audit-log-mode=blocking",
	}
	if opts.Cluster { // listen on the cluster network; pods get their tokens; exec reaches kubelets
		cert, key, err := cp.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return err
		}
		args = append(args, "--kubelet-client-certificate="+cert, "--kubelet-client-key="+key,
			"--kubelet-preferred-address-types=InternalIP")
		for i, a := range args {
			switch {
			case a == "--bind-address=127.0.0.1":
				args[i] = "--bind-address=0.0.0.0"
			case a == "--advertise-address=127.0.0.1":
				args[i] = "--advertise-address=" + ClusterGateway.IP.String()
			case a == "--endpoint-reconciler-type=none":
				// The kubernetes Service's endpoints: pods reach the API
				// through its ClusterIP (kube-proxy), as CoreDNS does.
				args[i] = "--endpoint-reconciler-type=lease"
			case a == "--disable-admission-plugins=ServiceAccount":
				args[i] = "--enable-admission-plugins=ServiceAccount"
			}
		}
	}
	if err := os.WriteFile(filepath.Join(d, "audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	p, err := startProcess(cp.launcher, d, "kube-apiserver", filepath.Join(tools, "kube-apiserver"),
		append(args, opts.ExtraAPIServerArgs...)...)
	if err != nil {
		return err
	}
	cp.processes = append(cp.processes, p)
	rc := cp.Admin.Discovery().RESTClient()
	return waitFor(ctx, 90*time.Second, p, func() bool {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, err := rc.Get().AbsPath("/readyz").DoRaw(c)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	})
}

func (cp *ControlPlane) startControllerManager(tools string, opts Options) error {
	cert, key, err := cp.pki.issue("controller-manager", "system:kube-controller-manager", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	kc := filepath.Join(cp.Dir, "controller-manager.kubeconfig")
	if err := cp.writeCertKubeconfig(kc, cert, key); err != nil {
		return err
	}
	cidr := opts.ClusterCIDR
	if cidr == "" {
		cidr = "10.244.0.0/16"
	}
	controllers := "nodeipam,serviceaccount,serviceaccount-token"
	if opts.Cluster {
		// nodelifecycle lifts the not-ready taint kubelets register with;
		// the others are what Services, Deployments (CoreDNS) and the
		// sig-network specs rely on in any real cluster.
		controllers += ",daemonset,root-ca-cert-publisher,garbagecollector,namespace,endpointslice,nodelifecycle" +
			",endpoint,endpointslicemirroring,deployment,replicaset,statefulset,service-cidr-controller"
	}
	p, err := startProcess(cp.launcher, cp.Dir, "kube-controller-manager", filepath.Join(tools, "kube-controller-manager"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--allocate-node-cidrs=true", "--cluster-cidr="+cidr, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--controllers="+controllers,
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(cp.Dir, "sa.key"),
		"--root-ca-file="+cp.pki.CAFile,
		"--cert-dir="+filepath.Join(cp.Dir, "kcm-certs"))
	if err != nil {
		return err
	}
	cp.processes = append(cp.processes, p)
	return nil
}

// waitFor polls ready until it holds, the process exits, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *Process, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if !p.running() {
			return p.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s:\n%s", p.name, timeout, p.tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PIDs of the running control-plane processes.
func (cp *ControlPlane) PIDs() map[string]int {
	m := map[string]int{}
	for _, p := range cp.processes {
		m[p.name] = p.PID()
	}
	return m
}

// Logs returns the tail of every process log, for failure reports.
func (cp *ControlPlane) Logs(n int) string {
	var b strings.Builder
	for _, p := range cp.processes {
		fmt.Fprintf(&b, "----- %s (pid %d) -----\n%s\n", p.name, p.PID(), p.tail(n))
	}
	return b.String()
}

// Stop ends the processes (newest first), the namespace and the directory.
func (cp *ControlPlane) Stop() error {
	for _, fn := range cp.onStop {
		fn()
	}
	var errs []error
	for i := len(cp.processes) - 1; i >= 0; i-- {
		errs = append(errs, cp.processes[i].stop(15*time.Second))
	}
	if cp.launcher != nil {
		cp.launcher.stop()
	}
	if cp.Node != nil {
		errs = append(errs, cp.Node.Close())
	}
	cp.removeMountPoints()
	errs = append(errs, os.RemoveAll(cp.Dir))
	return errors.Join(errs...)
}

// StopAPIServer stops kube-apiserver (etcd keeps the data); StartAPIServer
// brings it back on the same address.
func (cp *ControlPlane) StopAPIServer() error {
	for i, p := range cp.processes {
		if p.name == "kube-apiserver" {
			err := p.stop(15 * time.Second)
			cp.processes = append(cp.processes[:i], cp.processes[i+1:]...)
			return err
		}
	}
	return errors.New("kube-apiserver is not running")
}

// StartAPIServer starts kube-apiserver again and waits until it is ready.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	return cp.startAPIServer(ctx, cp.tools, cp.opts)
}

// StartProcess starts a long-running program in the node namespace (killed
// with the test process if that dies); its log is in Dir/<name>.log.
func (cp *ControlPlane) StartProcess(name, bin string, args ...string) (*Process, error) {
	return startProcess(cp.launcher, cp.Dir, name, bin, args...)
}

// CAFile is the cluster CA certificate's file (kubelets trust it for x509
// client authentication).
func (cp *ControlPlane) CAFile() string { return cp.pki.CAFile }

// KubeProxyKubeconfig writes a kubeconfig for kube-proxy (system:kube-proxy,
// which the bootstrap role system:node-proxier is bound to).
func (cp *ControlPlane) KubeProxyKubeconfig() (string, error) {
	cert, key, err := cp.pki.issue("kube-proxy", "system:kube-proxy", nil, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, "kube-proxy.kubeconfig")
	return path, cp.writeCertKubeconfig(path, cert, key)
}

// NodeKubeconfig writes a kubeconfig for the kubelet of node
// (CN=system:node:<node>, O=system:nodes), as the Node authorizer expects.
func (cp *ControlPlane) NodeKubeconfig(node string) (string, error) {
	cert, key, err := cp.pki.issue("kubelet-"+node, "system:node:"+node, []string{"system:nodes"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, "kubelet-"+node+".kubeconfig")
	return path, cp.writeCertKubeconfig(path, cert, key)
}

// startScheduler runs kube-scheduler (DaemonSet pods are bound by it).
func (cp *ControlPlane) startScheduler(tools string) error {
	cert, key, err := cp.pki.issue("scheduler", "system:kube-scheduler", nil, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	kc := filepath.Join(cp.Dir, "scheduler.kubeconfig")
	if err := cp.writeCertKubeconfig(kc, cert, key); err != nil {
		return err
	}
	p, err := startProcess(cp.launcher, cp.Dir, "kube-scheduler", filepath.Join(tools, "kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false")
	if err != nil {
		return err
	}
	cp.processes = append(cp.processes, p)
	return nil
}
