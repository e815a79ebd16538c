package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/install/internal/cri"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
)

// reclaimLoop reclaims leaked leases and host veths at start and then every
// LEAK_RECLAIM_INTERVAL (0: never).
func (in *Installer) reclaimLoop(ctx context.Context) {
	if in.Cfg.ReclaimInterval <= 0 {
		return
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		_, _ = in.Reclaim(ctx)
		timer.Reset(in.Cfg.ReclaimInterval)
	}
}

// Reclaim is leak reclamation without the runtime's GC (containerd never
// calls CNI GC): it asks the runtime over CRI which pod sandboxes it holds
// and runs the plugin's own GC with them as the valid attachments, so the
// leases and host veths of sandboxes the runtime has forgotten (a reboot, a
// lost DEL) are released. The GC collects only what passes at least
// LEAK_RECLAIM_GRACE apart all found stale (an ADD may be running: the
// runtime lists a sandbox only once it is set up) and removes a host veth
// only under its pod's lock. When the runtime cannot be asked, nothing is touched. It returns
// how many leases were released.
func (in *Installer) Reclaim(ctx context.Context) (int, error) {
	_, plugin, _ := in.seen.get()
	if plugin == nil {
		return 0, errors.New("failed to reclaim leaks: the conflist has no calico plugin")
	}
	list := in.Sandboxes
	if list == nil {
		list = func(ctx context.Context) ([]cri.Sandbox, error) {
			return cri.ListSandboxes(ctx, in.Cfg.RuntimeEndpoint)
		}
	}
	sandboxes, err := list(ctx)
	if err == nil {
		err = in.knowsOwnPod(sandboxes)
	}
	if err != nil {
		in.Log.Warn("the runtime cannot be asked for its pod sandboxes; nothing reclaimed", "err", err)
		return 0, err
	}
	conf, err := gcConf(plugin, sandboxes, in.Cfg.ReclaimGrace)
	if err != nil {
		return 0, err
	}
	before, _ := ipamexec.HostLocalLeases(plugin)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = ipamexec.Call{Plugin: "calico", Config: conf, Args: &skel.CmdArgs{Path: in.Cfg.BinSrcDir}}.GC(ctx)
	after, _ := ipamexec.HostLocalLeases(plugin)
	released := gone(before, after) // ADDs meanwhile do not hide a release
	if err != nil {
		in.Log.Error("failed to reclaim leaks", "err", err, "sandboxes", len(sandboxes), "released", released)
		return released, err
	}
	in.Log.Info("reclaimed leaks", "sandboxes", len(sandboxes), "leasesBefore", len(before), "released", released)
	return released, nil
}

// knowsOwnPod guards against asking the wrong runtime (a stale socket of
// another runtime on the node would list none of the pods, and every lease
// would look leaked): the runtime must hold install-cni's own pod sandbox.
func (in *Installer) knowsOwnPod(sandboxes []cri.Sandbox) error {
	if in.Cfg.PodName == "" {
		return nil // not run in a pod (POD_NAME unset): nothing to check against
	}
	for _, s := range sandboxes {
		if s.Name == in.Cfg.PodName && s.Namespace == in.Cfg.Namespace {
			return nil
		}
	}
	return fmt.Errorf("the runtime at %s lists %d pod sandboxes but not this pod (%s/%s): is CONTAINER_RUNTIME_ENDPOINT this node's runtime?",
		in.Cfg.RuntimeEndpoint, len(sandboxes), in.Cfg.Namespace, in.Cfg.PodName)
}

// gcConf is the plugin's configuration for a GC that keeps the runtime's
// sandboxes: each with eth0 in cni.dev/valid-attachments (the spec's key)
// and all of their interfaces through kdd-cni.dev/valid-sandboxes. GC needs
// cniVersion 1.1.0 whatever the conflist says.
func gcConf(plugin []byte, sandboxes []cri.Sandbox, grace time.Duration) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(plugin, &m); err != nil {
		return nil, err
	}
	valid := make([]types.GCAttachment, 0, len(sandboxes))
	ids := make([]string, 0, len(sandboxes))
	for _, s := range sandboxes {
		valid = append(valid, types.GCAttachment{ContainerID: s.ID, IfName: "eth0"})
		ids = append(ids, s.ID)
	}
	m["cniVersion"] = "1.1.0"
	m["cni.dev/valid-attachments"] = valid
	m["kdd-cni.dev/valid-sandboxes"] = ids
	m["kdd-cni.dev/gc-grace-seconds"] = int(grace / time.Second)
	return json.Marshal(m)
}

// gone counts the attachments of before that after no longer holds.
func gone(before, after []types.GCAttachment) int {
	held := map[types.GCAttachment]bool{}
	for _, a := range after {
		held[a] = true
	}
	n := 0
	for _, a := range before {
		if !held[a] {
			n++
		}
	}
	return n
}
