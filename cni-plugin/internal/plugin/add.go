package plugin

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/datastore"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/ipamexec"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/kube"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/naming"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/wep"
	"github.com/kdd-cni/kdd-cni/ipam/podcidr"
)

// Add: config → node → IPAM → plan → dataplane → WorkloadEndpoint → result.
// Every step after IPAM is undone if a later one fails.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("ADD", args, true)
	if err != nil {
		return err
	}
	defer func() { inv.end(err) }()
	ctx, cancel := withTimeout(addTimeout)
	defer cancel()

	lock, err := p.lockPod(ctx, inv)
	if err != nil {
		return inv.wrap(err)
	}
	defer lock.Release()
	api, err := p.api(inv.conf)
	if err != nil {
		return inv.wrap(err)
	}
	ipamConf, err := p.ipamConfigForAdd(ctx, inv, api)
	if err != nil {
		return inv.wrap(err)
	}
	call := ipamexec.Call{Plugin: inv.conf.IPAM.Type, Config: ipamConf, Args: args}
	alloc, err := call.Add(ctx)
	if err != nil {
		return inv.wrap(err)
	}
	success := false
	defer func() {
		if !success {
			inv.releaseIPAM(ctx, args)
		}
	}()
	pl, err := p.plan(inv, alloc.IPs)
	if err != nil {
		return inv.wrap(err)
	}
	created, err := dataplane.Setup(pl, args.Netns)
	if err != nil {
		return inv.wrap(err)
	}
	defer func() {
		if !success {
			if rerr := dataplane.Remove(pl, created.HostIndex); rerr != nil {
				inv.log.Warn("rollback: failed to remove interfaces", "err", rerr)
			}
		}
	}()
	if err := writeEndpoint(ctx, api, inv, pl.Addresses); err != nil {
		return inv.wrap(err)
	}
	success = true
	inv.log.Info("pod network ready", "hostVeth", pl.HostVeth, "ips", fmt.Sprint(pl.Addresses))
	return types.PrintResult(plan.Result(pl, alloc, created.ContainerMAC, args.Netns), inv.conf.CNIVersion)
}

// ipamConfigForAdd resolves usePodCidr from the Node (one GET) when the
// configuration uses it; otherwise the configuration passes unchanged.
func (p *Plugin) ipamConfigForAdd(ctx context.Context, inv *invocation, api *kube.Client) ([]byte, error) {
	fams, err := podcidr.Symbols(inv.args.StdinData)
	if err != nil || !fams.Any() {
		return inv.args.StdinData, err
	}
	cidrs, err := datastore.NodePodCIDRs(ctx, p.Env, inv.conf, api)
	if err != nil {
		return nil, err
	}
	return podcidr.Rewrite(inv.args.StdinData, cidrs)
}

// plan derives the kernel state for the allocated IPs.
func (p *Plugin) plan(inv *invocation, ips []*types100.IPConfig) (plan.Plan, error) {
	mtu, err := inv.conf.EffectiveMTU(p.Env)
	if err != nil {
		return plan.Plan{}, err
	}
	prefix := naming.InterfacePrefix(p.Env.Getenv("FELIX_INTERFACEPREFIX"))
	return plan.Build(plan.Input{
		HostVeth:             naming.HostVeth(prefix, inv.id.Namespace, inv.id.Pod),
		HostAlias:            naming.HostVethAlias(inv.args.ContainerID, inv.args.IfName),
		IfName:               inv.args.IfName,
		MTU:                  mtu,
		NumQueues:            inv.conf.NumQueues,
		IPs:                  ips,
		Routes:               inv.conf.IPAMRoutes,
		IncludeDefaultRoutes: inv.conf.IncludeDefaultRoutes,
		AllowIPForwarding:    inv.conf.ContainerSettings.AllowIPForwarding,
	})
}

// writeEndpoint records the WorkloadEndpoint: one PATCH of pods/status.
func writeEndpoint(ctx context.Context, api *kube.Client, inv *invocation, addrs []net.IPNet) error {
	patch, err := wep.AddPatch(addrs, inv.args.ContainerID)
	if err != nil {
		return err
	}
	if err := api.PatchPodStatus(ctx, inv.id.Namespace, inv.id.Pod, kube.StrategicMergePatch, patch); err != nil {
		return fmt.Errorf("failed to write the WorkloadEndpoint annotations: %w", err)
	}
	return nil
}

// releaseIPAM is ADD's rollback of the allocation; it gets its own time
// budget, since ADD may be failing because its own ran out.
func (inv *invocation) releaseIPAM(ctx context.Context, args *skel.CmdArgs) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := releaseCall(inv, args).Del(ctx); err != nil {
		inv.log.Warn("rollback: failed to release IP addresses", "err", err)
	}
}
