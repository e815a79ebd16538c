package harness

import (
	"context"
	"path/filepath"
)

// Suite is what a test package shares: a control plane whose node namespace
// has an uplink, the CNI identity's kubeconfig, and the binaries.
type Suite struct {
	CP         *ControlPlane
	Kubeconfig string
	BinDir     string
}

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
	s.Kubeconfig = filepath.Join(s.CP.Dir, "cni.kubeconfig")
	if err = s.CP.CNIKubeconfig(ctx, s.Kubeconfig, 3600); err != nil {
		return nil, err
	}
	return s, s.CP.AddUplink()
}

// Stop stops the control plane.
func (s *Suite) Stop() error { return s.CP.Stop() }
