package faults

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// Faults the proxy injects, with their weights.
var faults = []struct {
	f      harness.Fault
	weight int
}{
	{harness.Fault{}, 40},
	{harness.Fault{Delay: 300 * time.Millisecond}, 8},
	{harness.Fault{Delay: 4 * time.Second, Rate: 0.5}, 3}, // beyond the per-request timeout
	{harness.Fault{Status: 500}, 8},
	{harness.Fault{Status: 503, Rate: 0.5}, 6},
	{harness.Fault{Status: 401}, 6},
	{harness.Fault{Status: 403}, 6},
	{harness.Fault{Status: 429}, 3},
	{harness.Fault{Drop: true}, 8},
	{harness.Fault{Hang: true, Rate: 0.5}, 2},
}

func pickFault(rng *rand.Rand) harness.Fault {
	total := 0
	for _, f := range faults {
		total += f.weight
	}
	n := rng.IntN(total)
	for _, f := range faults {
		if n -= f.weight; n < 0 {
			return f.f
		}
	}
	return harness.Fault{}
}

func TestFaultInjection(t *testing.T) {
	harness.RequireRoot(t)
	cycles := 150
	if v := os.Getenv("KDD_FAULT_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("invalid KDD_FAULT_CYCLES=%q: want a positive integer", v)
		}
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KDD_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("invalid KDD_FAULT_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	t.Logf("seed %d (KDD_FAULT_SEED), %d cycles (KDD_FAULT_CYCLES)", seed, cycles)
	ctx := context.Background()
	_, podCIDR, _ := net.ParseCIDR("10.240.0.0/24")
	if _, err := suite.CP.CreateNode(ctx, node, podCIDR.String()); err != nil {
		t.Fatal(err)
	}
	proxy, err := suite.CP.StartFaultProxy(7443)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	viaProxy, err := suite.CP.KubeconfigVia(suite.Kubeconfig, proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	w := &world{
		t: t, rng: rand.New(rand.NewPCG(seed, 7)), kubeconfig: viaProxy, dataDir: dataDir,
		stateDir: filepath.Join(dataDir, "state"), podCIDR: podCIDR, live: map[string]*sandbox{}, stats: map[string]*opStats{},
	}
	for i := 0; i < 6; i++ {
		name := "p" + strconv.Itoa(i)
		if _, err := suite.CP.CreatePod(ctx, namespace, name, node); err != nil {
			t.Fatal(err)
		}
		w.pods = append(w.pods, name)
	}
	defer func() { // the runtime tears everything down at the end, whatever happened
		proxy.Set(harness.Fault{})
		for pod, sb := range w.live {
			w.delUntilDone(sb, false)
			delete(w.live, pod)
		}
	}()

	// Phase 1: faults injected by the proxy.
	for i := 0; i < cycles; i++ {
		proxy.Set(pickFault(w.rng))
		w.cycle()
	}
	w.report("phase 1: proxy faults", w.settle(proxy), proxy)

	// Phase 2: the apiserver stopped, then restarted.
	if err := suite.CP.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < max(cycles/5, 10); i++ {
		w.cycle()
	}
	if err := suite.CP.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	w.report("phase 2: apiserver stopped and restarted", w.settle(proxy), proxy)

	// Phase 3: a revoked token (its service account deleted).
	revoked := revokedKubeconfig(t, proxy.URL)
	w.kubeconfig = revoked
	for i := 0; i < max(cycles/5, 10); i++ {
		w.cycle()
	}
	w.kubeconfig = viaProxy
	w.report("phase 3: revoked token", w.settle(proxy), proxy)

	// Finally: every sandbox deleted, nothing may remain.
	for pod, sb := range w.live {
		w.delUntilDone(sb, false)
		delete(w.live, pod)
	}
	w.report("end: all sandboxes deleted", w.settle(proxy), proxy)
}

// revokedKubeconfig is a working CNI identity whose service account is then
// deleted: the apiserver rejects its token from then on (401).
func revokedKubeconfig(t *testing.T, server string) string {
	ctx := context.Background()
	a := suite.CP.Admin
	if _, err := a.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "revoked"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "revoked"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: harness.CNIServiceAccount},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "revoked", Namespace: "kube-system"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	direct := filepath.Join(t.TempDir(), "revoked.kubeconfig")
	if err := suite.CP.ServiceAccountKubeconfig(ctx, direct, "kube-system", "revoked", 600); err != nil {
		t.Fatal(err)
	}
	if err := a.CoreV1().ServiceAccounts("kube-system").Delete(ctx, "revoked", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	via, err := suite.CP.KubeconfigVia(direct, server)
	if err != nil {
		t.Fatal(err)
	}
	return via
}
