// Package ipamexec runs other plugins the way a runtime would: the
// delegated IPAM plugin, and the calico plugin's GC for install-cni's leak
// reclaimer. Each is found in CNI_PATH and gets the network configuration
// on stdin, the CNI_* environment of this invocation, and IgnoreUnknown=1
// in CNI_ARGS so Kubernetes' extra keys (K8S_POD_UID, ...) do not make it
// fail. host-local's ADD, DEL and CHECK run in-process instead, with its
// own packages (hostlocal.go). It is the only place kdd-cni execs another
// plugin, and the one reader of host-local's lease store.
package ipamexec

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// Call is one delegated IPAM command.
type Call struct {
	Plugin string        // e.g. "host-local"
	Config []byte        // the (rewritten) network configuration
	Args   *skel.CmdArgs // this invocation's CNI parameters
}

func (c Call) run(ctx context.Context, command string, withResult bool) (*types100.Result, error) {
	if conf, ok := c.inProcess(); ok && command != "GC" {
		return hostLocal(ctx, conf, command, c.Args.ContainerID, c.Args.IfName)
	}
	path, err := invoke.FindInPath(c.Plugin, filepath.SplitList(c.Args.Path))
	if err != nil {
		return nil, fmt.Errorf("failed to find IPAM plugin %q in CNI_PATH %q: %w", c.Plugin, c.Args.Path, err)
	}
	args := &invoke.Args{
		Command:       command,
		ContainerID:   c.Args.ContainerID,
		NetNS:         c.Args.Netns,
		IfName:        c.Args.IfName,
		PluginArgsStr: netconf.WithIgnoreUnknown(c.Args.Args),
		Path:          c.Args.Path,
	}
	if !withResult {
		if err := invoke.ExecPluginWithoutResult(ctx, path, c.Config, args, &boundedExec{}); err != nil {
			return nil, fmt.Errorf("failed to run IPAM %s (%s): %w", command, c.Plugin, err)
		}
		return nil, nil
	}
	res, err := invoke.ExecPluginWithResult(ctx, path, c.Config, args, &boundedExec{})
	if err != nil {
		return nil, fmt.Errorf("failed to run IPAM %s (%s): %w", command, c.Plugin, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("failed to convert the %s result: %w", c.Plugin, err)
	}
	return r, nil
}

// Add allocates addresses.
func (c Call) Add(ctx context.Context) (*types100.Result, error) { return c.run(ctx, "ADD", true) }

// Del releases the addresses of this container ID and interface.
func (c Call) Del(ctx context.Context) error { _, err := c.run(ctx, "DEL", false); return err }

// Check verifies the allocation.
func (c Call) Check(ctx context.Context) error { _, err := c.run(ctx, "CHECK", false); return err }

// GC releases allocations not in the config's cni.dev/valid-attachments.
func (c Call) GC(ctx context.Context) error { _, err := c.run(ctx, "GC", false); return err }
