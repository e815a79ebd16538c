package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/wep"
)

// Del: clear the WorkloadEndpoint (if this sandbox still owns it), while
// deleting the interface → release the addresses once the clear is done
// (so Felix drops the IP before it can be reused). Each step runs whatever
// the previous one said: a datastore that is down, slow or refusing never
// keeps the interface or the lease, and never fails the DEL (the clear is
// journaled and replayed later). Anything already gone is success.
func (p *Plugin) Del(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("DEL", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	ctx, cancel := withTimeout(delTimeout)
	defer cancel()
	p.replayJournal(ctx, inv)

	lock, err := p.lockPod(ctx, inv)
	if err != nil {
		return inv.Wrap(err)
	}
	defer lock.Release()
	// A mark left by this sandbox's ADD: it was killed, maybe mid-PATCH or
	// with its host-local killed mid-allocation.
	interrupted := inv.Conf.State().Adding().Has(args.ContainerID)
	t := time.Now()
	cleared := make(chan error, 1)
	go func() { cleared <- p.clearEndpoint(ctx, inv) }()
	ifErr := dataplane.Teardown(args.Netns, args.IfName, p.ownedHostVeth(inv), teardownTimeout)
	inv.Step("teardown", &t)
	epErr := <-cleared
	if epErr == nil && inv.HasPod && inv.Conf.State().Adding().WasInterrupted(args.ContainerID) {
		epErr = p.deferClear(inv, "ADD interrupted")
	}
	inv.Step("endpoint", &t)
	ipamErr := leaseCall(inv).Del(ctx)
	if interrupted {
		removeTornLeases(ctx, inv)
	}
	inv.Step("ipam", &t)
	return inv.Wrap(errors.Join(ifErr, ipamErr, epErr))
}

// ownedHostVeth names the host veth this sandbox created, if the pod is known.
func (p *Plugin) ownedHostVeth(inv *command) dataplane.Owned {
	if !inv.HasPod {
		return dataplane.Owned{}
	}
	return dataplane.Owned{HostVeth: inv.HostVeth,
		Alias: inv.HostAlias}
}

// clearEndpoint blanks podIP/podIPs with one guarded JSON patch. When the
// datastore cannot take it, the clear goes to the journal instead; only a
// journal that cannot be written is an error.
func (p *Plugin) clearEndpoint(ctx context.Context, inv *command) error {
	if !inv.HasPod {
		return nil
	}
	api, err := inv.API()
	if err == nil {
		err = wep.Clear(ctx, api, inv.Pod.Namespace, inv.Pod.Pod, wep.Endpoint{ContainerID: inv.Args.ContainerID})
	}
	if err == nil {
		inv.Log.Info("WorkloadEndpoint annotations cleared (or not ours)")
		return nil
	}
	inv.Log.Warn("datastore unavailable; journaling the annotation clear", "err", err)
	if jerr := inv.Conf.State().Journal().Write(nodestate.Entry{
		Namespace: inv.Pod.Namespace, Pod: inv.Pod.Pod, ContainerID: inv.Args.ContainerID,
		Recorded: time.Now(), Reason: err.Error(),
	}); jerr != nil {
		return fmt.Errorf("failed to clear the WorkloadEndpoint annotations (%w) and to journal it: %w", err, jerr)
	}
	return nil
}

// deferClear journals a deferred clear for a sandbox whose annotation PATCH
// may still land (its ADD was killed, or the PATCH got no answer): replayed
// once due, guarded by the container ID, it undoes a late landing.
func (p *Plugin) deferClear(inv *command, reason string) error {
	inv.Log.Info("journaling a deferred annotation clear", "reason", reason)
	now := time.Now()
	return inv.Conf.State().Journal().Write(nodestate.Entry{
		Namespace: inv.Pod.Namespace, Pod: inv.Pod.Pod, ContainerID: inv.Args.ContainerID,
		Recorded: now, NotBefore: now.Add(2 * time.Second), Reason: reason,
	})
}

// removeTornLeases clears the debris of a host-local killed mid-allocation
// (with a killed ADD): an empty lease file no DEL could ever release. DEL
// does it only after a killed ADD, GC always: it takes host-local's lock.
func removeTornLeases(ctx context.Context, inv *command) {
	if inv.Conf.IPAM.Type != "host-local" {
		return
	}
	n, err := ipamexec.RemoveTornLeases(ctx, inv.Args.StdinData)
	if n > 0 || err != nil {
		inv.Log.Info("removed lease files host-local never finished", "removed", n, "err", err)
	}
}

// leaseCall is the IPAM call for this container's existing lease (DEL,
// CHECK, GC, rollback): no API call is needed (see Frame.ReleaseConf).
func leaseCall(inv *command) ipamexec.Call {
	return ipamexec.Call{Plugin: inv.Conf.IPAM.Type, Config: inv.ReleaseConf(), Args: inv.Args}
}
