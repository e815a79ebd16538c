// Package installer does install-cni's work under a host root: binaries into
// the CNI bin dir(s), the CNI kubeconfig (a TokenRequest token for the CNI
// identity), then the conflist, all written atomically; in sidecar mode it
// keeps the token fresh. Errors are returned, never fatal.
package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
	"github.com/kdd-cni/kdd-cni/install/internal/cri"
	"github.com/kdd-cni/kdd-cni/install/internal/render"
	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/confcheck"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// Installer installs under cfg.HostRoot. NewAPI is called for every token
// request, so a rotated installer credential is picked up at once.
type Installer struct {
	Cfg    *config.Config
	NewAPI func() (*kubeclient.Client, error)
	Log    *slog.Logger
	// RefreshEvery, if set, overrides the expiry-based schedule
	// (CNI_TOKEN_REFRESH_INTERVAL).
	RefreshEvery time.Duration
	// boundUID is the UID of the Node the current token is bound to.
	boundUID string
	// mintedWith is the digest of install-cni's own service-account token
	// as the last mint began: the sidecar re-mints when the file differs,
	// so a rotation any time after that point is not missed.
	mintedWith string
	// written is the cniVersion of the conflist last written, conflist its
	// bytes.
	written  string
	conflist []byte
	// mtu is the pods' MTU in the conflist written last, mtuSource where
	// it came from (podMTU).
	mtu       int
	mtuSource string
	mtuErr    string // the subnet file's last error, said once
	// shadowing names the conflists last found to sort before ours.
	shadowing string
	// Sandboxes lists the runtime's pod sandboxes (nil: over CRI at
	// CONTAINER_RUNTIME_ENDPOINT).
	Sandboxes func(context.Context) ([]cri.Sandbox, error)
	// seen is what the sidecar last learnt of its node and files.
	seen observed
}

// confVersion is the conflist's cniVersion: CNI_CONF_VERSION if set, else
// the newest the node's container runtime accepts.
func (in *Installer) confVersion(node NodeInfo) (version, why string) {
	if in.Cfg.ConfVersion != "" {
		return in.Cfg.ConfVersion, "CNI_CONF_VERSION"
	}
	version = render.CNIVersionFor(node.ContainerRuntimeVersion)
	return version, "runtime " + strconv.Quote(node.ContainerRuntimeVersion)
}

// notInstalled are image files that are not CNI plugins.
var notInstalled = map[string]bool{"install-cni": true, "kddctl": true}

// Run installs once and, in sidecar mode (SLEEP=true), runs the sidecar's
// jobs until ctx is done.
func (in *Installer) Run(ctx context.Context) error {
	if err := in.Validate(); err != nil {
		return err
	}
	if err := in.InstallBinaries(); err != nil {
		return err
	}
	expiry, err := in.WriteCredentials(ctx)
	if err != nil {
		return err
	}
	if err := in.removeOldConf(); err != nil {
		return err
	}
	in.warnShadowed()
	in.Log.Info("installed", "conflist", filepath.Join(in.Cfg.HostNetDir(), in.Cfg.ConfName), "tokenExpiry", expiry)
	if !in.Cfg.Sleep {
		return nil
	}
	return in.runSidecar(ctx, expiry)
}

// prepareStateDir makes the plugins' state_dir (mounted in the sidecar)
// root's and 0700 (the kubelet makes a hostPath 0755), and refuses one
// someone else can write into, as the plugins do.
func (in *Installer) prepareStateDir() error {
	if err := os.MkdirAll(in.Cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("failed to create the state dir: %w", err)
	}
	return nodestate.Check(in.Cfg.StateDir)
}

// Validate proves, before anything is written, that the conflist template
// renders to valid JSON and that install-cni's own API credentials load: a
// bad value must not leave the host with new binaries and no config.
func (in *Installer) Validate() error {
	api, err := in.NewAPI()
	if err != nil {
		return fmt.Errorf("failed to load install-cni's API credentials: %w", err)
	}
	mtu, _ := in.podMTU()
	conflist, err := render.Conflist(in.Cfg.Template, in.values(in.server(api), mtu), "validation-token")
	if err == nil {
		conflist, err = render.WithVersion(conflist, in.Cfg.ConfVersion)
	}
	if err == nil {
		err = in.check(conflist)
	}
	return err
}

// check refuses a conflist the calico plugin would refuse (confcheck, as
// `kddctl validate` runs it) and logs what it would ignore.
func (in *Installer) check(conflist []byte) error {
	r, err := confcheck.Conflist(conflist, confcheck.Env())
	if err != nil {
		return fmt.Errorf("refusing to write the conflist: %w", err)
	}
	for _, w := range r.Warnings {
		in.Log.Warn("conflist", "warning", w)
	}
	return nil
}

// InstallBinaries copies every plugin of the image to each writable bin dir.
func (in *Installer) InstallBinaries() error {
	entries, err := os.ReadDir(in.Cfg.BinSrcDir)
	if err != nil {
		return fmt.Errorf("failed to list binaries in %s: %w", in.Cfg.BinSrcDir, err)
	}
	dirs := in.Cfg.BinDirs()
	if err := os.MkdirAll(dirs[0], 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", dirs[0], err)
	}
	installed := 0
	for _, dir := range dirs {
		if !writable(dir) {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if !e.Type().IsRegular() || notInstalled[name] || in.Cfg.SkipBins[name] {
				continue
			}
			dst := filepath.Join(dir, name)
			if !in.Cfg.UpdateBins {
				if _, err := os.Stat(dst); err == nil {
					continue
				}
			}
			changed, err := copyFile(filepath.Join(in.Cfg.BinSrcDir, name), dst)
			if err != nil {
				return err
			}
			if changed {
				in.Log.Info("installed binary", "path", dst)
			}
		}
		installed++
	}
	if installed == 0 {
		if _, err := os.Stat(filepath.Join(dirs[0], "calico")); err == nil && !in.Cfg.UpdateBins {
			return nil // read-only host image that already has the plugin
		}
		return fmt.Errorf("failed to install binaries: no writable CNI bin dir among %v", dirs)
	}
	return nil
}

// WriteCredentials mints a CNI token and writes the kubeconfig, then the
// conflist (which points at it). It returns the token's expiry.
func (in *Installer) WriteCredentials(ctx context.Context) (time.Time, error) {
	in.mintedWith = fileDigest(in.Cfg.OwnTokenFile)
	api, err := in.NewAPI()
	if err != nil {
		return time.Time{}, err
	}
	// The token is bound to this node's Node object: it carries the node's
	// name (the admission policy lets it patch only pods on this node) and
	// dies with the Node.
	node, err := in.readNode(ctx, api)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to bind the CNI token to its Node: %w", err)
	}
	token, expiry, err := in.mintToken(ctx, api, node.UID)
	if err != nil {
		return time.Time{}, err
	}
	in.boundUID = node.UID
	server := in.server(api)
	ca, err := api.CAData()
	if err != nil {
		return time.Time{}, err
	}
	netDir := in.Cfg.HostNetDir()
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		return time.Time{}, fmt.Errorf("failed to create %s: %w", netDir, err)
	}
	kc := render.Kubeconfig(server, ca, in.Cfg.SkipTLSVerify, token)
	if err := atomicfile.Write(filepath.Join(netDir, config.KubeconfigName), kc, 0o600); err != nil {
		return time.Time{}, err
	}
	mtu, source := in.podMTU()
	conflist, err := render.Conflist(in.Cfg.Template, in.values(server, mtu), token)
	if err != nil {
		return time.Time{}, err
	}
	version, why := in.confVersion(node)
	if conflist, err = render.WithVersion(conflist, version); err != nil {
		return time.Time{}, err
	}
	if _, err := confcheck.Conflist(conflist, confcheck.Env()); err != nil {
		return time.Time{}, fmt.Errorf("refusing to write the conflist: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(netDir, in.Cfg.ConfName), conflist, 0o600); err != nil {
		return time.Time{}, err
	}
	if version != in.written {
		in.Log.Info("conflist cniVersion", "cniVersion", version, "why", why)
		in.written = version
	}
	if mtu != in.mtu || source != in.mtuSource {
		in.Log.Info("pod MTU", "mtu", mtu, "from", source)
		if in.Cfg.Sleep && mtu != in.mtu {
			in.warnLargerMTU(mtu)
		}
		in.mtu, in.mtuSource = mtu, source
	}
	in.conflist = conflist
	in.seen.set(node, pluginConf(conflist), expiry)
	return expiry, nil
}

// RollbackVersion is the newest cniVersion Calico v3's `calico` binary
// accepts: it refuses anything above it, for DEL as for ADD.
const RollbackVersion = "1.0.0"

// LeaveRollbackConflist is the sidecar's last step when it stops (the
// DaemonSet deleted, or its pod replaced): a conflist it wrote with a
// cniVersion above 1.0.0 is rewritten with 1.0.0, so a node rolled back to
// Calico's binary can still tear its pods down. Every runtime reads 1.0.0
// and kdd-cni serves it (a runtime then skips STATUS and GC); the next
// install-cni writes the runtime's version again. A conflist someone else
// wrote since is left alone.
func (in *Installer) LeaveRollbackConflist() error {
	above, err := version.GreaterThan(in.written, RollbackVersion)
	if in.conflist == nil || err != nil || !above {
		return nil
	}
	path := filepath.Join(in.Cfg.HostNetDir(), in.Cfg.ConfName)
	current, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read %s to lower its cniVersion: %w", path, err)
	}
	if !bytes.Equal(current, in.conflist) {
		in.Log.Info("conflist changed by someone else: leaving its cniVersion", "conflist", path)
		return nil
	}
	lowered, err := render.WithVersion(current, RollbackVersion)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, lowered, 0o600); err != nil {
		return err
	}
	in.Log.Info("conflist cniVersion lowered for a rollback to Calico's binary", "from", in.written, "to", RollbackVersion)
	in.written, in.conflist = RollbackVersion, lowered
	return nil
}

func (in *Installer) removeOldConf() error {
	if in.Cfg.OldConf == in.Cfg.ConfName {
		return nil
	}
	err := os.Remove(filepath.Join(in.Cfg.HostNetDir(), in.Cfg.OldConf))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove old conflist %s: %w", in.Cfg.OldConf, err)
	}
	return nil
}
