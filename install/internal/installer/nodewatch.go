package installer

import (
	"context"
	"errors"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// nodeWatchTimeout is how long one watch request lasts before the server
// ends it and the sidecar resumes from the last version seen.
const nodeWatchTimeout = 5 * time.Minute

// watchNode publishes the node's podCIDRs for the plugins (podcidr.Watched)
// from a watch on its Node, so an ADD reads them from the node instead of
// the API server. The copy is withdrawn while the Node is gone or has no
// podCIDRs, and withdrawn with the lock whenever the watch is not
// established (an error, a refused resume, ctx ending): the plugins then
// read the Node themselves, as without a sidecar.
func (in *Installer) watchNode(ctx context.Context) {
	node := in.Cfg.NodeName
	pub, err := podcidr.NewPublisher(in.Cfg.StateDir, node)
	if err != nil {
		in.Log.Error("not publishing the node's podCIDRs", "err", err)
		return
	}
	defer pub.Close()
	rv, failures := "", 0
	for ctx.Err() == nil {
		err := in.watchNodeOnce(ctx, pub, &rv)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			continue // the server ended the watch: resume
		}
		if errors.Is(err, kube.ErrGone) {
			rv = "" // too old to resume: start again from the current state
		}
		failures++
		_ = pub.Close()
		in.Log.Warn("the watch on the node's Node failed; plugins read the Node until it is back",
			"err", err, "retryIn", Backoff(failures))
		select {
		case <-ctx.Done():
		case <-time.After(Backoff(failures)):
		}
	}
}

// watchNodeOnce runs one watch request from *rv, publishing every change.
func (in *Installer) watchNodeOnce(ctx context.Context, pub *podcidr.Publisher, rv *string) error {
	api, err := in.NewAPI()
	if err != nil {
		return err
	}
	node := in.Cfg.NodeName
	return api.WatchNode(ctx, node, *rv, nodeWatchTimeout, func(e kube.NodeChange) error {
		*rv = e.ResourceVersion
		switch e.Type {
		case "ADDED", "MODIFIED":
			cidrs, err := podcidr.ByFamily(node, e.Facts.PodCIDRs)
			if err != nil || (cidrs.V4 == "" && cidrs.V6 == "") {
				return pub.Withdraw()
			}
			return pub.Publish(podcidr.NodeCIDRs{Node: node, UID: e.Facts.UID, CIDRs: cidrs})
		case "DELETED":
			return pub.Withdraw()
		}
		return nil // BOOKMARK
	})
}
