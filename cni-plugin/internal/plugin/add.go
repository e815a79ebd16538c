package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/journal"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/internal/podopts"
)

// Add: readiness gates → lock → IPAM (podCIDRs and pod annotations read
// beside it) → plan → dataplane + WorkloadEndpoint → wait for policy →
// result. Each acquisition pushes its undo; all are undone, within ADD's
// bound, unless ADD succeeds.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("ADD", args, true)
	if err != nil {
		return err
	}
	defer func() { inv.end(err) }()
	if err := awaitReadinessGates(inv); err != nil {
		return inv.wrap(err)
	}
	ctx, rollback, cancel := addContexts()
	defer cancel()
	inv.rollback = rollback
	p.replayJournal(ctx, inv)
	lock, err := p.lockPod(ctx, inv)
	if err != nil {
		return inv.wrap(err)
	}
	defer lock.Release()
	inFlight, err := markAdding(inv)
	if err != nil {
		return inv.wrap(err)
	}
	defer inv.conf.AddMarks().Done(args.ContainerID)

	undo := &undoStack{log: inv.log}
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	t := inv.start
	session, alloc, err := p.ipam(ctx, inv, undo)
	if err != nil {
		return inv.wrap(err)
	}
	inv.step("ipam", &t)
	pl, err := p.planFor(inv, session, alloc)
	if err != nil {
		return inv.wrap(err)
	}
	created, err := p.network(ctx, inv, session, pl, undo)
	inv.step("dataplane+endpoint", &t)
	if err != nil {
		return inv.wrap(err)
	}
	if len(inFlight) > 0 {
		p.journalReassert(inv, pl.Addresses, inFlight)
	}
	inv.log.Info("pod network ready", "hostVeth", pl.HostVeth, "ips", fmt.Sprint(pl.Addresses))
	waitForPolicy(inv)
	return types.PrintResult(plan.Result(pl, alloc, created.ContainerMAC, args.Netns), inv.conf.CNIVersion)
}

// markAdding marks the ADD on the node (a mark a killed ADD leaves behind),
// and lists the other sandboxes of the pod whose PATCH may still land: a
// mark left by a killed ADD, or a pending clear.
func markAdding(inv *invocation) ([]string, error) {
	marks, id := inv.conf.AddMarks(), inv.id
	inFlight := marks.Others(id.Namespace, id.Pod, inv.args.ContainerID)
	for _, other := range journal.PendingFor(inv.conf.JournalDir(), id.Namespace, id.Pod, inv.args.ContainerID) {
		if !slices.Contains(inFlight, other) {
			inFlight = append(inFlight, other)
		}
	}
	if err := marks.Mark(id.Namespace, id.Pod, inv.args.ContainerID); err != nil {
		return nil, fmt.Errorf("failed to mark the ADD in %s: %w", marks.Dir, err)
	}
	return inFlight, nil
}

// ipam starts the API work (node podCIDRs, pod annotations) and allocates.
func (p *Plugin) ipam(ctx context.Context, inv *invocation, undo *undoStack) (*apiSession, *types100.Result, error) {
	fams, err := podcidr.Symbols(inv.args.StdinData)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, err)
	}
	node := ""
	if fams.Any() {
		nodename, err := inv.conf.ResolveNodename(p.Env)
		if err != nil {
			return nil, nil, err
		}
		node = inv.conf.PodCIDRNode(nodename)
	}
	session := p.openSession(ctx, inv, node, inv.conf.RuntimeConfig.PodAnnotations)
	alloc, err := p.allocate(ctx, inv, session, node)
	if err != nil {
		return nil, nil, err
	}
	undo.push("release the IP addresses", func() error { return leaseCall(inv).Del(inv.rollback) })
	return session, alloc, nil
}

// planFor applies the pod's annotations and plans its network.
func (p *Plugin) planFor(inv *invocation, s *apiSession, alloc *types100.Result) (plan.Plan, error) {
	opts, err := podOptions(inv, s)
	if err != nil {
		return plan.Plan{}, err
	}
	return p.plan(inv, alloc.IPs, opts.ContainerMAC)
}

// network sets up the dataplane while the WorkloadEndpoint PATCH is on its
// way, and pushes the undo of each. A PATCH that got no definitive answer
// (timeout, dropped connection, 5xx) may still land after ADD has failed:
// its undo is a deferred clear, guarded by this sandbox's container ID.
func (p *Plugin) network(ctx context.Context, inv *invocation, s *apiSession, pl plan.Plan, undo *undoStack) (dataplane.Result, error) {
	s.startEndpointWrite(ctx, inv, pl.Addresses)
	created, setupErr := dataplane.Setup(pl, inv.args.Netns)
	if setupErr == nil {
		undo.push("remove the interfaces", func() error { return dataplane.Remove(pl, created.HostIndex) })
	}
	epErr := s.endpointWritten()
	switch {
	case epErr == nil:
		undo.push("clear the annotations", func() error { return p.clearEndpoint(inv.rollback, inv) })
	case !kube.Definitive(epErr):
		undo.push("journal a deferred clear", func() error {
			return p.deferClear(inv, "ADD's annotation PATCH got no definitive answer")
		})
	}
	return created, errors.Join(setupErr, epErr)
}

// journalReassert guards this sandbox's annotations against the late PATCH
// of an older sandbox of the pod that died mid-ADD: once that PATCH has
// surely landed, a replay restores ours if it overwrote them.
func (p *Plugin) journalReassert(inv *invocation, addrs []net.IPNet, olderSandboxes []string) {
	cidrs := make([]string, len(addrs))
	for i, a := range addrs {
		cidrs[i] = a.String()
	}
	now := time.Now()
	err := journal.Record(inv.conf.JournalDir(), journal.Entry{
		Namespace: inv.id.Namespace, Pod: inv.id.Pod, ContainerID: inv.args.ContainerID,
		Recorded: now, NotBefore: now.Add(3 * time.Second), Reason: "older sandbox's PATCH may land late",
		Reassert: &journal.Reassert{PodIP: cidrs[0], PodIPs: strings.Join(cidrs, ","), Guards: olderSandboxes},
	})
	inv.log.Info("an older sandbox of this pod may still write its annotations; journaled a reassert",
		"older", fmt.Sprint(olderSandboxes), "err", err)
}

// podOptions applies Calico's pod annotations: the runtime's copy (the
// io.kubernetes.cri.pod-annotations capability) or the Pod's, read from the
// API beside IPAM.
func podOptions(inv *invocation, s *apiSession) (podopts.Options, error) {
	annotations, err := s.annotations()
	if err != nil {
		return podopts.Options{}, err
	}
	return podopts.Parse(annotations, inv.conf.IPAM.Type, inv.conf.FeatureControl)
}

// allocate runs IPAM. usePodCidr is resolved from the cached podCIDRs at
// once while the Node is read; the allocation is kept only if the Node's
// podCIDRs are the cached ones. Otherwise (the Node was re-created with
// other CIDRs) it is released and IPAM runs again on the Node's current
// podCIDRs, so no ADD fails and no address outside them is handed out.
func (p *Plugin) allocate(ctx context.Context, inv *invocation, s *apiSession, node string) (*types100.Result, error) {
	add := func(conf []byte) (*types100.Result, error) {
		r, err := ipamexec.Call{Plugin: inv.conf.IPAM.Type, Config: conf, Args: inv.args}.Add(ctx)
		if err != nil {
			// It may have allocated before failing (or being killed at the
			// deadline): host-local's DEL of an unknown container is a no-op.
			if rerr := leaseCall(inv).Del(inv.rollback); rerr != nil {
				inv.log.Warn("rollback: failed to release IP addresses", "err", rerr)
			}
		}
		return r, err
	}
	if node == "" { // no usePodCidr
		return add(inv.args.StdinData)
	}
	if cached, ok := podcidr.Cached(inv.conf.StateDir, node); ok {
		if conf, err := podcidr.Rewrite(inv.args.StdinData, cached.CIDRs); err == nil {
			alloc, ipamErr := add(conf)
			current, err := s.nodeCIDRs()
			if err == nil && current.CIDRs == cached.CIDRs {
				if current.UID != cached.UID {
					_ = podcidr.Store(inv.conf.StateDir, current)
				}
				return alloc, ipamErr
			}
			if ipamErr == nil {
				if rerr := leaseCall(inv).Del(inv.rollback); rerr != nil {
					return nil, errors.Join(err, fmt.Errorf("failed to release an allocation from stale podCIDRs: %w", rerr))
				}
			}
			if err != nil {
				return nil, err
			}
			inv.log.Info("node podCIDRs changed (Node re-created); allocating again",
				"cached", fmt.Sprint(cached), "current", fmt.Sprint(current))
		}
	}
	current, err := s.nodeCIDRs()
	if err != nil {
		return nil, err
	}
	_ = podcidr.Store(inv.conf.StateDir, current)
	conf, err := podcidr.Rewrite(inv.args.StdinData, current.CIDRs)
	if err != nil {
		return nil, err
	}
	return add(conf)
}

// plan derives the kernel state for the allocated IPs.
func (p *Plugin) plan(inv *invocation, ips []*types100.IPConfig, containerMAC net.HardwareAddr) (plan.Plan, error) {
	mtu, err := inv.conf.EffectiveMTU(p.Env)
	if err != nil {
		return plan.Plan{}, err
	}
	prefix := naming.InterfacePrefix(p.Env.Getenv("FELIX_INTERFACEPREFIX"))
	return plan.Build(plan.Input{
		HostVeth:             naming.HostVeth(prefix, inv.id.Namespace, inv.id.Pod),
		HostAlias:            naming.HostVethAlias(inv.conf.Name, inv.args.ContainerID, inv.args.IfName),
		IfName:               inv.args.IfName,
		ContainerMAC:         containerMAC,
		MTU:                  mtu,
		NumQueues:            inv.conf.NumQueues,
		IPs:                  ips,
		Routes:               inv.conf.IPAMRoutes,
		IncludeDefaultRoutes: inv.conf.IncludeDefaultRoutes,
		AllowIPForwarding:    inv.conf.ContainerSettings.AllowIPForwarding,
	})
}
