package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/podlock"
)

// lockWait bounds how long GC waits for a pod's lock before leaving its
// host veth for the next GC: an ADD or DEL of that pod is running.
const lockWait = 100 * time.Millisecond

// GC (CNI 1.1): release every lease of this network and remove every host
// veth kdd-cni created whose attachment is not in cni.dev/valid-attachments.
// Leases go through host-local's own DEL; a host veth is removed under its
// pod's lock. Without the key nothing is collected: the runtime gave no
// list, so nothing is known to be stale. Attachments of the container IDs
// in kdd-cni.dev/valid-sandboxes, and those whose lease is younger than
// kdd-cni.dev/gc-grace-seconds, count as valid too.
func (p *Plugin) GC(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("GC", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	listed, given := inv.Conf.ValidAttachments()
	if !given {
		inv.Log.Info("no cni.dev/valid-attachments given; nothing to collect")
		return nil
	}
	ctx, cancel := withTimeout(gcTimeout)
	defer cancel()
	p.replayJournal(ctx, inv)
	live := map[string]bool{} // kdd-cni.dev/valid-sandboxes
	for _, id := range inv.Conf.GCSandboxes {
		live[id] = true
	}
	valid, err := withYoungLeases(inv, listed, live)
	if err != nil {
		return err
	}
	released, ipamErr := p.collectLeases(ctx, inv, valid)
	removeTornLeases(ctx, inv)
	removed, linkErr := removeOrphanVeths(ctx, inv, valid, live)
	validIDs := map[string]bool{}
	for a := range valid {
		validIDs[a.ContainerID] = true
	}
	inv.Conf.AddMarks().ForgetExcept(func(id string) bool { return validIDs[id] })
	inv.Log.Info("garbage collected", "valid", len(listed), "young", len(valid)-len(listed),
		"leasesReleased", len(released), "linksRemoved", removed)
	return errors.Join(ipamErr, linkErr)
}

// withYoungLeases adds to the listed attachments those whose lease is
// younger than the grace period, and the leases of the live sandboxes.
func withYoungLeases(inv *command, listed map[types.GCAttachment]bool, live map[string]bool) (map[types.GCAttachment]bool, error) {
	valid := map[types.GCAttachment]bool{}
	for a := range listed {
		valid[a] = true
	}
	if inv.Conf.IPAM.Type != "host-local" {
		return valid, nil
	}
	var since time.Time
	if g := inv.Conf.GCGraceSeconds; g > 0 {
		since = time.Now().Add(-time.Duration(g) * time.Second)
	}
	young, err := ipamexec.YoungLeases(inv.ReleaseConf(), since)
	if err != nil {
		return nil, fmt.Errorf("failed to read leases for the grace period: %w", err)
	}
	for _, a := range young {
		valid[a] = true
	}
	if len(live) == 0 {
		return valid, nil
	}
	leases, err := ipamexec.HostLocalLeases(inv.ReleaseConf())
	if err != nil {
		return nil, err
	}
	for _, a := range leases {
		if live[a.ContainerID] {
			valid[a] = true
		}
	}
	return valid, nil
}

// removeOrphanVeths removes the host veths of attachments not in valid,
// each under its pod's lock (the lock is named after the host veth); one
// whose lock is held is left for the next GC.
func removeOrphanVeths(ctx context.Context, inv *command, valid map[types.GCAttachment]bool, live map[string]bool) (int, error) {
	orphans, err := dataplane.OrphanHostVeths(inv.Conf.InterfacePrefix, inv.Conf.Name, func(id, ifName string) bool {
		return live[id] || valid[types.GCAttachment{ContainerID: id, IfName: ifName}]
	})
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, o := range orphans {
		lctx, cancel := context.WithTimeout(ctx, lockWait)
		lock, err := podlock.Acquire(lctx, inv.Conf.LockDir(), o.Name)
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

func (p *Plugin) collectLeases(ctx context.Context, inv *command, valid map[types.GCAttachment]bool) ([]types.GCAttachment, error) {
	call := leaseCall(inv)
	if inv.Conf.IPAM.Type != "host-local" {
		return nil, call.GC(ctx) // another IPAM plugin collects its own
	}
	return ipamexec.ReleaseStale(ctx, call.Plugin, call.Config, inv.Args,
		func(a types.GCAttachment) bool { return valid[a] })
}
