package plugin

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
)

// GC (CNI 1.1): release every lease of this network and remove every host
// veth kdd-cni created whose attachment is not in cni.dev/valid-attachments.
// Leases go through host-local's own DEL. Without the key nothing is
// collected: the runtime gave no list, so nothing is known to be stale.
func (p *Plugin) GC(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("GC", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	valid, given := inv.Conf.ValidAttachments()
	if !given {
		inv.Log.Info("no cni.dev/valid-attachments given; nothing to collect")
		return nil
	}
	ctx, cancel := withTimeout(gcTimeout)
	defer cancel()
	p.replayJournal(ctx, inv)
	released, ipamErr := p.collectLeases(ctx, inv, valid)
	removeTornLeases(ctx, inv)
	prefix := inv.Conf.InterfacePrefix
	removed, linkErr := dataplane.RemoveOrphanHostVeths(prefix, inv.Conf.Name, func(id, ifName string) bool {
		return valid[types.GCAttachment{ContainerID: id, IfName: ifName}]
	})
	liveIDs := map[string]bool{}
	for a := range valid {
		liveIDs[a.ContainerID] = true
	}
	inv.Conf.AddMarks().ForgetExcept(func(id string) bool { return liveIDs[id] })
	inv.Log.Info("garbage collected", "valid", len(valid), "leasesReleased", len(released), "linksRemoved", removed)
	return errors.Join(ipamErr, linkErr)
}

func (p *Plugin) collectLeases(ctx context.Context, inv *command, valid map[types.GCAttachment]bool) ([]types.GCAttachment, error) {
	call := leaseCall(inv)
	if inv.Conf.IPAM.Type != "host-local" {
		return nil, call.GC(ctx) // another IPAM plugin collects its own
	}
	return ipamexec.ReleaseStale(ctx, call.Plugin, call.Config, inv.Args,
		func(a types.GCAttachment) bool { return valid[a] })
}
