package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/podopts"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/internal/wep"
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
	defer func() { inv.End(err) }()
	if err := awaitReadinessGates(inv); err != nil {
		return inv.Wrap(err)
	}
	ctx, rollback, cancel := addContexts()
	defer cancel()
	inv.rollback = rollback
	inv.Deadline, _ = ctx.Deadline() // an exec credential plugin ends by then
	p.replayJournal(ctx, inv)
	lock, err := p.lockPod(ctx, inv)
	if err != nil {
		return inv.Wrap(err)
	}
	defer lock.Release()
	inFlight, err := markAdding(inv)
	if err != nil {
		return inv.Wrap(err)
	}
	defer inv.Conf.State().Adding().Done(args.ContainerID)

	undo := &undoStack{log: inv.Log}
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	t := inv.Start
	session, alloc, err := p.ipam(ctx, inv, undo)
	if session != nil {
		defer session.close()
	}
	if err != nil {
		return inv.Wrap(err)
	}
	inv.Step("ipam", &t)
	inv.Mark("allocated")
	pl, err := p.planFor(inv, session, alloc)
	if err != nil {
		return inv.Wrap(err)
	}
	created, err := p.network(ctx, inv, session, pl, undo)
	inv.Step("dataplane+endpoint", &t)
	if err != nil {
		return inv.Wrap(err)
	}
	if len(inFlight) > 0 {
		p.journalReassert(inv, pl.Addresses, inFlight)
	}
	inv.Log.Info("pod network ready", "hostVeth", pl.HostVeth, "ips", fmt.Sprint(pl.Addresses))
	waitForPolicy(inv)
	return types.PrintResult(plan.Result(pl, alloc, created.ContainerMAC, args.Netns), inv.Conf.CNIVersion)
}

// markAdding marks the ADD on the node (a mark a killed ADD leaves behind),
// and lists the other sandboxes of the pod whose PATCH may still land: a
// mark left by a killed ADD, or a pending clear. The journal is read again
// here, under the pod's lock, though replayJournal read it just before: a
// DEL of another sandbox of the pod may have journaled a clear in between.
func markAdding(inv *command) ([]string, error) {
	marks, id := inv.Conf.State().Adding(), inv.Pod
	inFlight := marks.Others(id.Namespace, id.Pod, inv.Args.ContainerID)
	for _, other := range inv.Conf.State().Journal().PendingFor(id.Namespace, id.Pod, inv.Args.ContainerID) {
		if !slices.Contains(inFlight, other) {
			inFlight = append(inFlight, other)
		}
	}
	if err := marks.Mark(id.Namespace, id.Pod, inv.Args.ContainerID); err != nil {
		return nil, fmt.Errorf("failed to mark the ADD in %s: %w", marks, err)
	}
	return inFlight, nil
}

// ipam starts the API work (node podCIDRs, pod annotations) and allocates.
func (p *Plugin) ipam(ctx context.Context, inv *command, undo *undoStack) (*apiSession, *types100.Result, error) {
	conf, err := inv.IPAMConf()
	if err != nil {
		return nil, nil, err
	}
	node, read := "", ""
	var watched *podcidr.NodeCIDRs
	if conf.Families().Any() {
		if node, err = inv.PodCIDRNode(); err != nil {
			return nil, nil, err
		}
		if c, ok := nodestate.WatchedPodCIDRs(inv.Conf.StateDir, node); ok {
			watched = &c
		} else {
			read = node // no live watch: the session reads the Node
		}
	}
	session := p.openSession(ctx, inv, read, inv.Conf.RuntimeConfig.PodAnnotations)
	alloc, err := p.allocate(ctx, inv, session, conf, node, watched)
	if err != nil {
		return session, nil, err
	}
	undo.push("release the IP addresses", func() error { return leaseCall(inv).Del(inv.rollback) })
	return session, alloc, nil
}

// planFor applies the pod's annotations and plans its network.
func (p *Plugin) planFor(inv *command, s *apiSession, alloc *types100.Result) (plan.Plan, error) {
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
func (p *Plugin) network(ctx context.Context, inv *command, s *apiSession, pl plan.Plan, undo *undoStack) (dataplane.Result, error) {
	s.startEndpointWrite(ctx, inv, pl.Addresses)
	start := time.Now()
	created, setupErr := dataplane.Setup(pl, inv.Args.Netns)
	inv.Time("veth", time.Since(start))
	inv.Mark("veth-done")
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
func (p *Plugin) journalReassert(inv *command, addrs []net.IPNet, olderSandboxes []string) {
	now := time.Now()
	err := inv.Conf.State().Journal().Write(nodestate.Entry{
		Namespace: inv.Pod.Namespace, Pod: inv.Pod.Pod, ContainerID: inv.Args.ContainerID,
		Recorded: now, NotBefore: now.Add(3 * time.Second), Reason: "older sandbox's PATCH may land late",
		Reassert: &nodestate.Reassert{Endpoint: wep.NewEndpoint(addrs, inv.Args.ContainerID), Guards: olderSandboxes},
	})
	inv.Log.Info("an older sandbox of this pod may still write its annotations; journaled a reassert",
		"older", fmt.Sprint(olderSandboxes), "err", err)
}

// podOptions applies Calico's pod annotations: the runtime's copy (the
// io.kubernetes.cri.pod-annotations capability) or the Pod's, read from the
// API beside IPAM.
func podOptions(inv *command, s *apiSession) (podopts.Options, error) {
	annotations, err := s.annotations()
	if err != nil {
		return podopts.Options{}, err
	}
	return podopts.Parse(annotations, inv.Conf.IPAM.Type, inv.Conf.FeatureControl)
}

// delegateAdd runs the IPAM plugin's ADD; a failed one is released, as it
// may have allocated before failing (or being killed at the deadline):
// host-local's DEL of an unknown container is a no-op.
func (p *Plugin) delegateAdd(ctx context.Context, inv *command, conf []byte) (*types100.Result, error) {
	start := time.Now()
	r, err := ipamexec.Call{Plugin: inv.Conf.IPAM.Type, Config: conf, Args: inv.Args}.Add(ctx)
	inv.Time(inv.Conf.IPAM.Type, time.Since(start)) // "host-local"
	if err != nil {
		if rerr := leaseCall(inv).Del(inv.rollback); rerr != nil {
			inv.Log.Warn("rollback: failed to release IP addresses", "err", rerr)
		}
	}
	return r, err
}

// allocate runs IPAM. usePodCidr is resolved from watched, the podCIDRs
// install-cni's sidecar keeps current from its watch on the Node, when
// there is a live copy: no request. Otherwise from the cached podCIDRs at
// once while the Node is read; the allocation is kept only if the Node's
// podCIDRs are the cached ones. Otherwise (the Node was re-created with
// other CIDRs) it is released and IPAM runs again on the Node's current
// podCIDRs, so no ADD fails and no address outside them is handed out.
func (p *Plugin) allocate(ctx context.Context, inv *command, s *apiSession, ipamConf *podcidr.Conf, node string, watched *podcidr.NodeCIDRs) (*types100.Result, error) {
	add := func(conf []byte) (*types100.Result, error) { return p.delegateAdd(ctx, inv, conf) }
	if node == "" { // no usePodCidr
		return add(inv.Args.StdinData)
	}
	if watched != nil {
		conf, err := ipamConf.Rewrite(watched.CIDRs)
		if err != nil {
			return nil, err
		}
		return add(conf)
	}
	if cached, ok := nodestate.CachedPodCIDRs(inv.Conf.StateDir, node); ok {
		if conf, err := ipamConf.Rewrite(cached.CIDRs); err == nil {
			alloc, ipamErr := add(conf)
			current, err := s.nodeCIDRs()
			if err == nil && current.CIDRs == cached.CIDRs {
				if current.UID != cached.UID {
					_ = nodestate.StorePodCIDRs(inv.Conf.StateDir, current)
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
			inv.Log.Info("node podCIDRs changed (Node re-created); allocating again",
				"cached", fmt.Sprint(cached), "current", fmt.Sprint(current))
		}
	}
	current, err := s.nodeCIDRs()
	if err != nil {
		return nil, err
	}
	_ = nodestate.StorePodCIDRs(inv.Conf.StateDir, current)
	conf, err := ipamConf.Rewrite(current.CIDRs)
	if err != nil {
		return nil, err
	}
	return add(conf)
}

// plan derives the kernel state for the allocated IPs.
func (p *Plugin) plan(inv *command, ips []*types100.IPConfig, containerMAC net.HardwareAddr) (plan.Plan, error) {
	mtu, err := inv.Conf.EffectiveMTU(inv.Env)
	if err != nil {
		return plan.Plan{}, err
	}
	return plan.Build(plan.Input{
		HostVeth:             inv.HostVeth,
		HostAlias:            inv.HostAlias,
		IfName:               inv.Args.IfName,
		ContainerMAC:         containerMAC,
		MTU:                  mtu,
		NumQueues:            inv.Conf.NumQueues,
		IPs:                  ips,
		Routes:               inv.Conf.IPAMRoutes,
		IncludeDefaultRoutes: inv.Conf.IncludeDefaultRoutes,
		AllowIPForwarding:    inv.Conf.ContainerSettings.AllowIPForwarding,
	})
}
