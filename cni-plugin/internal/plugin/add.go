package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/datastore"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/ipamexec"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/journal"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/naming"
	"github.com/kdd-cni/kdd-cni/ipam/podcidr"
)

// Add: config → podCIDRs → IPAM → plan → dataplane + WorkloadEndpoint →
// result. The API work runs beside the kernel work (apiSession); every step
// after IPAM is undone if a later one fails.
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
	if err := journal.MarkAdding(inv.conf.AddingDir(), args.ContainerID); err != nil {
		return inv.wrap(fmt.Errorf("failed to mark the ADD in %s: %w", inv.conf.AddingDir(), err))
	}
	defer journal.DoneAdding(inv.conf.AddingDir(), args.ContainerID)
	t := inv.start
	fams, err := podcidr.Symbols(args.StdinData)
	if err != nil {
		return err
	}
	session := p.openSession(ctx, inv, fams.Any())
	ipamConf, confirm, err := p.ipamConfigForAdd(inv, session, fams)
	if err != nil {
		return inv.wrap(err)
	}
	alloc, err := ipamexec.Call{Plugin: inv.conf.IPAM.Type, Config: ipamConf, Args: args}.Add(ctx)
	if err != nil {
		return inv.wrap(err)
	}
	success := false
	defer func() {
		if !success {
			inv.releaseIPAM(ctx, args)
		}
	}()
	inv.step("ipam", &t)
	if err := confirm(); err != nil {
		return inv.wrap(err)
	}
	pl, err := p.plan(inv, alloc.IPs)
	if err != nil {
		return inv.wrap(err)
	}
	session.startEndpointWrite(ctx, inv, pl.Addresses)
	created, err := dataplane.Setup(pl, args.Netns)
	inv.step("dataplane", &t)
	if epErr := session.endpointWritten(); err != nil || epErr != nil {
		return inv.wrap(p.undoAdd(ctx, inv, pl, created, err, epErr))
	}
	inv.step("endpoint", &t)
	success = true
	inv.log.Info("pod network ready", "hostVeth", pl.HostVeth, "ips", fmt.Sprint(pl.Addresses))
	return types.PrintResult(plan.Result(pl, alloc, created.ContainerMAC, args.Netns), inv.conf.CNIVersion)
}

// undoAdd rolls back what the dataplane and the PATCH did when either
// failed, and returns the error to report.
func (p *Plugin) undoAdd(ctx context.Context, inv *invocation, pl plan.Plan, created dataplane.Result, setupErr, epErr error) error {
	if setupErr == nil {
		if err := dataplane.Remove(pl, created.HostIndex); err != nil {
			inv.log.Warn("rollback: failed to remove interfaces", "err", err)
		}
		return epErr
	}
	if epErr == nil { // the annotations went out for a network that failed
		if err := p.clearEndpoint(context.WithoutCancel(ctx), inv); err != nil {
			inv.log.Warn("rollback: failed to clear the annotations", "err", err)
		}
	}
	return setupErr
}

// ipamConfigForAdd resolves usePodCidr. With cached podCIDRs host-local runs
// at once and confirm checks them against the API server before anything is
// written (a mismatch fails the ADD and refreshes the cache); without a
// cache it waits for the node. Configurations without usePodCidr pass as-is.
func (p *Plugin) ipamConfigForAdd(inv *invocation, s *apiSession, fams podcidr.Families) ([]byte, func() error, error) {
	noop := func() error { return nil }
	if !fams.Any() {
		return inv.args.StdinData, noop, nil
	}
	nodename, err := inv.conf.ResolveNodename(p.Env)
	if err != nil {
		return nil, nil, err
	}
	node := inv.conf.PodCIDRNode(nodename)
	cached, ok := datastore.CachedPodCIDRs(inv.conf.StateDir, node)
	if !ok {
		cidrs, err := s.nodeCIDRs()
		if err != nil {
			return nil, nil, err
		}
		_ = datastore.StorePodCIDRs(inv.conf.StateDir, node, cidrs)
		conf, err := podcidr.Rewrite(inv.args.StdinData, cidrs)
		return conf, noop, err
	}
	conf, err := podcidr.Rewrite(inv.args.StdinData, cached)
	confirm := func() error {
		cidrs, err := s.nodeCIDRs()
		if err != nil {
			return err
		}
		if cidrs != cached {
			_ = datastore.StorePodCIDRs(inv.conf.StateDir, node, cidrs)
			return fmt.Errorf("node %q podCIDRs changed from %+v to %+v (the Node was re-created?): retry the ADD", node, cached, cidrs)
		}
		return nil
	}
	return conf, confirm, err
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

// releaseIPAM is ADD's rollback of the allocation; it gets its own time
// budget, since ADD may be failing because its own ran out.
func (inv *invocation) releaseIPAM(ctx context.Context, args *skel.CmdArgs) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := releaseCall(inv, args).Del(ctx); err != nil {
		inv.log.Warn("rollback: failed to release IP addresses", "err", err)
	}
}
