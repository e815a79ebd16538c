package plugin

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// Status (CNI 1.1): ready when the API server answers with the configured
// identity and the node has a podCIDR of every family the configuration
// names; otherwise error 50 ("plugin not available") saying which.
func (p *Plugin) Status(args *skel.CmdArgs) (err error) {
	inv, err := p.begin("STATUS", args, false)
	if err != nil {
		return err
	}
	defer func() { inv.End(err) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.APITimeout)
	defer cancel()
	p.replayJournal(ctx, inv)
	if err := inv.NodeReady(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "kdd-cni is not ready: "+err.Error(), "")
	}
	return nil
}
