package installer

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// nodeWatchTimeout is how long one watch request lasts before the server
// ends it and the sidecar resumes from the last version seen; each request
// adds up to a fifth of it at random, so a fleet's watches do not end in step.
const nodeWatchTimeout = 5 * time.Minute

// watchNode publishes the node's podCIDRs for the plugins (podcidr.Watched)
// from a watch on its Node, so an ADD reads them from the node instead of
// the API server. The copy is withdrawn while the Node is gone or has no
// podCIDRs, and withdrawn with the lock whenever the watch is not
// established (an error, a refused resume, ctx ending): the plugins then
// read the Node themselves, as without a sidecar. Every event and bookmark
// confirms the copy; so does the sidecar's own read of the Node
// (confirmPodCIDRs), which withdraws a copy the watch let go stale.
func (in *Installer) watchNode(ctx context.Context, pub *podcidr.Publisher) {
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
		wait := Backoff(failures)
		in.Log.Warn("the watch on the node's Node failed; plugins read the Node until it is back",
			"err", err, "retryIn", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
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
	timeout := nodeWatchTimeout + rand.N(nodeWatchTimeout/5)
	return api.WatchNode(ctx, node, *rv, timeout, func(e kube.NodeChange) error {
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
		return pub.Touch() // BOOKMARK: nothing changed up to e.ResourceVersion
	})
}
