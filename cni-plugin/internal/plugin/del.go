package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/wep"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/ipamexec"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/kube"
	"github.com/kdd-cni/kdd-cni/ipam/podcidr"
)

// Del: clear the WorkloadEndpoint (if this sandbox still owns it) → delete
// the interface → release the addresses. Each step runs whatever the
// previous one said, so a datastore failure never keeps the interface or the
// lease; anything already gone is success.
func (p *Plugin) Del(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("DEL", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.end(err) }()
	ctx, cancel := withTimeout()
	defer cancel()

	epErr := p.clearEndpoint(ctx, inv)
	ifErr := dataplane.Teardown(args.Netns, args.IfName, teardownTimeout)
	ipamErr := releaseCall(inv, args).Del(ctx)
	return inv.wrap(errors.Join(ifErr, ipamErr, epErr))
}

// clearEndpoint blanks podIP/podIPs in one guarded JSON patch. 404 (pod
// gone) and 422 (a newer sandbox owns the annotations) mean nothing to do.
func (p *Plugin) clearEndpoint(ctx context.Context, inv *invocation) error {
	if !inv.hasPod {
		return nil
	}
	api, err := p.api(inv.conf)
	if err != nil {
		return err
	}
	patch, err := wep.ReleasePatch(inv.args.ContainerID)
	if err != nil {
		return err
	}
	err = api.PatchPodStatus(ctx, inv.id.Namespace, inv.id.Pod, kube.JSONPatch, patch)
	switch {
	case err == nil:
		inv.log.Info("cleared WorkloadEndpoint annotations")
		return nil
	case errors.Is(err, kube.ErrNotFound):
		inv.log.Info("pod is gone; no annotations to clear")
		return nil
	case errors.Is(err, kube.ErrInvalid):
		inv.log.Info("annotations belong to another sandbox (or were never written); left alone")
		return nil
	}
	return fmt.Errorf("failed to clear the WorkloadEndpoint annotations: %w", err)
}

// releaseCall is the IPAM call that frees this container's addresses. The
// podCIDR symbols become non-overlapping placeholders: host-local releases by
// container ID and interface, so no API call is needed.
func releaseCall(inv *invocation, args *skel.CmdArgs) ipamexec.Call {
	conf := args.StdinData
	if fams, err := podcidr.Symbols(conf); err == nil && fams.Any() {
		if rewritten, err := podcidr.RewriteForRelease(conf); err == nil {
			conf = rewritten
		}
	}
	return ipamexec.Call{Plugin: inv.conf.IPAM.Type, Config: conf, Args: args}
}
