package plugin

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/dataplane"
	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

// Check: prevResult → IPAM check → plan → kernel check. Prints nothing on
// success; the error names the first difference.
func (p *Plugin) Check(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("CHECK", args, true)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	ctx, cancel := withTimeout(checkTimeout)
	defer cancel()
	p.replayJournal(ctx, inv)

	if inv.Conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult", "")
	}
	ips, err := plan.IPsFromResult(inv.Conf.PrevResult)
	if err != nil {
		return err
	}
	if err := leaseCall(inv).Check(ctx); err != nil {
		return inv.Wrap(err)
	}
	mac, err := plan.ContainerMAC(inv.Conf.PrevResult, args.IfName, args.Netns)
	if err != nil {
		return err
	}
	pl, err := p.plan(inv, ips, mac)
	if err != nil {
		return inv.Wrap(err)
	}
	if err := dataplane.Check(pl, args.Netns); err != nil {
		return inv.Wrap(err)
	}
	return nil
}
