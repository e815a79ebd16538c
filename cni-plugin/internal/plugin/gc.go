package plugin

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/sweep"
)

// lockWait bounds how long GC waits for a pod's lock before leaving its
// host veth for the next GC: an ADD or DEL of that pod is running.
const lockWait = 100 * time.Millisecond

// GC (CNI 1.1): release every lease of this network and remove every host
// veth kdd-cni created whose attachment is stale: not in
// cni.dev/valid-attachments, nor of a sandbox in kdd-cni.dev/valid-sandboxes.
// With kdd-cni.dev/gc-grace-seconds, only what GC passes at least that far
// apart have all found stale is collected (package sweep): a sandbox whose
// ADD began after the runtime's list was taken is never touched. Leases go
// through host-local's own DEL; a host veth is removed under its pod's
// lock. Without the key nothing is collected: the runtime gave no list, so
// nothing is known to be stale.
func (p *Plugin) GC(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("GC", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	if _, given := inv.Conf.ValidAttachments(); !given {
		inv.Log.Info("no cni.dev/valid-attachments given; nothing to collect")
		return nil
	}
	ctx, cancel := withTimeout(gcTimeout)
	defer cancel()
	p.replayJournal(ctx, inv)
	pass, err := sweep.Begin(ctx, inv.Conf.State().GC(), inv.Conf.State().Locks(), inv.Conf.Name, "calico", inv.Conf.GCGrace())
	if err != nil {
		return err
	}
	live, collected := inv.Conf.GCLive(), map[string]bool{}
	keep := func(a types.GCAttachment) bool {
		if live(a) || !pass.Due(a) {
			return true
		}
		collected[a.ContainerID] = true
		return false
	}
	released, ipamErr := p.collectLeases(ctx, inv, keep)
	removeTornLeases(ctx, inv)
	removed, linkErr := removeOrphanVeths(ctx, inv, keep)
	inv.Conf.State().Adding().ForgetExcept(func(id string) bool { return !collected[id] })
	inv.Log.Info("garbage collected", "marked", len(pass.Marks), "leasesReleased", len(released), "linksRemoved", removed)
	return errors.Join(ipamErr, linkErr, pass.End())
}

// removeOrphanVeths removes the host veths of attachments keep rejects,
// each under its pod's lock (the lock is named after the host veth); one
// whose lock is held is left for the next GC.
func removeOrphanVeths(ctx context.Context, inv *command, keep func(types.GCAttachment) bool) (int, error) {
	orphans, err := dataplane.OrphanHostVeths(inv.Conf.InterfacePrefix, inv.Conf.Name, func(id, ifName string) bool {
		return keep(types.GCAttachment{ContainerID: id, IfName: ifName})
	})
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, o := range orphans {
		lctx, cancel := context.WithTimeout(ctx, lockWait)
		lock, err := inv.Conf.State().Locks().Acquire(lctx, o.Name)
		cancel()
		if err != nil {
			inv.Log.Info("host veth busy, left for the next GC", "link", o.Name, "err", err)
			continue
		}
		ok, err := dataplane.RemoveOrphanHostVeth(o)
		lock.Release()
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed++
		}
	}
	return removed, errors.Join(errs...)
}

func (p *Plugin) collectLeases(ctx context.Context, inv *command, keep func(types.GCAttachment) bool) ([]types.GCAttachment, error) {
	call := leaseCall(inv)
	if inv.Conf.IPAM.Type != "host-local" {
		return nil, call.GC(ctx) // another IPAM plugin collects its own
	}
	return ipamexec.ReleaseStale(ctx, call.Plugin, call.Config, inv.Args, keep)
}
