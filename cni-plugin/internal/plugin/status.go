package plugin

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
)

// Status (CNI 1.1): the node's checks (invocation.Health), each reason
// separately: ready, or error 50 ("plugin not available") naming every
// failed one. Warnings are logged and do not fail STATUS.
func (p *Plugin) Status(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("STATUS", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.APITimeout)
	defer cancel()
	p.replayJournal(ctx, inv)
	return inv.Frame.Status(ctx, "kdd-cni", inv.Conf.IPAM.Type == "host-local")
}
