package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/journal"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/internal/podopts"
)

// Add: config → readiness gates → podCIDRs + pod annotations → IPAM → plan
// → dataplane + WorkloadEndpoint → wait for policy → result. The API work
// runs beside the kernel work (apiSession); every step after IPAM is undone
// if a later one fails.
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
	inFlight := journal.InFlight(inv.conf.AddingDir(), inv.conf.JournalDir(), inv.id.Namespace, inv.id.Pod, args.ContainerID)
	if err := journal.MarkAdding(inv.conf.AddingDir(), inv.id.Namespace, inv.id.Pod, args.ContainerID); err != nil {
		return inv.wrap(fmt.Errorf("failed to mark the ADD in %s: %w", inv.conf.AddingDir(), err))
	}
	defer journal.DoneAdding(inv.conf.AddingDir(), args.ContainerID)
	t := inv.start
	fams, err := podcidr.Symbols(args.StdinData)
	if err != nil {
		return err
	}
	session := p.openSession(ctx, inv, fams.Any(), inv.conf.RuntimeConfig.PodAnnotations)
	alloc, err := p.allocate(ctx, inv, session, fams)
	if err != nil {
		return inv.wrap(err)
	}
	success := false
	defer func() {
		if !success {
			inv.releaseIPAM(args)
		}
	}()
	inv.step("ipam", &t)
	opts, err := podOptions(inv, session)
	if err != nil {
		return inv.wrap(err)
	}
	pl, err := p.plan(inv, alloc.IPs, opts.ContainerMAC)
	if err != nil {
		return inv.wrap(err)
	}
	session.startEndpointWrite(ctx, inv, pl.Addresses)
	created, err := dataplane.Setup(pl, args.Netns)
	inv.step("dataplane", &t)
	if epErr := session.endpointWritten(); err != nil || epErr != nil {
		return inv.wrap(p.undoAdd(inv, pl, created, err, epErr))
	}
	inv.step("endpoint", &t)
	success = true
	if len(inFlight) > 0 {
		p.journalReassert(inv, pl.Addresses, inFlight)
	}
	inv.log.Info("pod network ready", "hostVeth", pl.HostVeth, "ips", fmt.Sprint(pl.Addresses))
	waitForPolicy(inv)
	return types.PrintResult(plan.Result(pl, alloc, created.ContainerMAC, args.Netns), inv.conf.CNIVersion)
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
	return podopts.Parse(annotations, inv.conf.IPAM.Type, podopts.Features{
		IPAddrsNoIpam: inv.conf.FeatureControl.IPAddrsNoIpam, FloatingIPs: inv.conf.FeatureControl.FloatingIPs})
}

// undoAdd rolls back what the dataplane and the PATCH did when either
// failed, and returns both errors. A PATCH that got no definitive answer
// (timeout, dropped connection, 5xx) may still land after this ADD has
// failed: a deferred clear, guarded by this sandbox's container ID, undoes
// it then.
func (p *Plugin) undoAdd(inv *invocation, pl plan.Plan, created dataplane.Result, setupErr, epErr error) error {
	if setupErr == nil {
		if err := dataplane.Remove(pl, created.HostIndex); err != nil {
			inv.log.Warn("rollback: failed to remove interfaces", "err", err)
		}
	}
	switch {
	case epErr == nil: // the annotations went out for a network that failed
		if err := p.clearEndpoint(inv.rollback, inv); err != nil {
			inv.log.Warn("rollback: failed to clear the annotations", "err", err)
		}
	case !kube.Definitive(epErr):
		if err := p.deferClear(inv, "ADD's annotation PATCH got no definitive answer"); err != nil {
			inv.log.Warn("rollback: failed to journal a deferred clear", "err", err)
		}
	}
	return errors.Join(setupErr, epErr)
}

// allocate runs IPAM. usePodCidr is resolved from the cached podCIDRs at
// once while the Node is read; the allocation is kept only if the Node's
// podCIDRs are the cached ones. Otherwise (the Node was re-created with
// other CIDRs) it is released and IPAM runs again on the Node's current
// podCIDRs, so no ADD fails and no address outside them is handed out.
func (p *Plugin) allocate(ctx context.Context, inv *invocation, s *apiSession, fams podcidr.Families) (*types100.Result, error) {
	add := func(conf []byte) (*types100.Result, error) {
		r, err := ipamexec.Call{Plugin: inv.conf.IPAM.Type, Config: conf, Args: inv.args}.Add(ctx)
		if err != nil {
			// It may have allocated before failing (or being killed at the
			// deadline): host-local's DEL of an unknown container is a no-op.
			inv.releaseIPAM(inv.args)
		}
		return r, err
	}
	if !fams.Any() {
		return add(inv.args.StdinData)
	}
	nodename, err := inv.conf.ResolveNodename(p.Env)
	if err != nil {
		return nil, err
	}
	if cached, ok := podcidr.Cached(inv.conf.StateDir, inv.conf.PodCIDRNode(nodename)); ok {
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

// releaseIPAM is ADD's rollback of the allocation, within the rollback part
// of ADD's bound (the work part may be what ran out).
func (inv *invocation) releaseIPAM(args *skel.CmdArgs) {
	if err := leaseCall(inv).Del(inv.rollback); err != nil {
		inv.log.Warn("rollback: failed to release IP addresses", "err", err)
	}
}
