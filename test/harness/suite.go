package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
)

// Suite is what a test package shares: a control plane whose node namespace
// has an uplink, the CNI identity's kubeconfig (none for a Cluster: its
// tests install the manifest, which brings the identity), and the binaries.
type Suite struct {
	CP         *ControlPlane
	Kubeconfig string
	BinDir     string
	cleanups   []func()
}

// Cleanup registers fn to run when the Suite stops (last registered first),
// before the control plane stops.
func (s *Suite) Cleanup(fn func()) { s.cleanups = append(s.cleanups, fn) }

// StartSuite starts a Suite; call Stop when the package's tests are done.
func StartSuite(ctx context.Context, opts Options) (s *Suite, err error) {
	s = &Suite{}
	if s.BinDir, err = BinDir(); err != nil {
		return nil, err
	}
	if s.CP, err = Start(ctx, opts); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.CP.Stop()
		}
	}()
	if !opts.Cluster { // a cluster's tests install the manifest, which brings the identity
		s.Kubeconfig = filepath.Join(s.CP.Dir, "cni.kubeconfig")
		if err = s.CP.CNIKubeconfig(ctx, s.Kubeconfig, 3600); err != nil {
			return nil, err
		}
	}
	return s, s.CP.AddUplink()
}

// Stop runs the registered cleanups and stops the control plane.
func (s *Suite) Stop() error {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	return s.CP.Stop()
}

// RunSuite is a test package's TestMain body: without root it runs the tests
// (which skip); with root it starts a Suite, runs setup, runs the tests,
// prints the control-plane logs on failure, and stops the Suite.
func RunSuite(m *testing.M, opts Options, setup func(*Suite) error) int {
	if os.Geteuid() != 0 {
		if InCI() {
			fmt.Fprintln(os.Stderr, "these tests need root (network namespaces) and CI=true: refusing to skip them")
			return 1
		}
		fmt.Println("skipping: these tests need root for network namespaces (run `sudo make test`)")
		return m.Run()
	}
	s, err := StartSuite(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}()
	if setup != nil {
		if err := setup(s); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, s.CP.Logs(3000))
	}
	return code
}

// HostLocalLeases reads host-local's store for a network: IP → container
// ID (through the plugins' own reader).
func HostLocalLeases(dataDir, network string) map[string]string {
	leases, _ := ipamexec.LeasesIn(filepath.Join(dataDir, network))
	out := map[string]string{}
	for ip, a := range leases {
		out[ip] = a.ContainerID
	}
	return out
}
