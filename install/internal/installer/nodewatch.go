package installer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// nodeWatchTimeout is how long one watch request lasts before the server
// ends it and the sidecar resumes from the last version seen; each request
// adds up to a fifth of it at random, so a fleet's watches do not end in
// step. Every resumed watch confirms the published copy (nothing changed up
// to the server's current version), so it bounds the copy's age well below
// nodestate.PodCIDRMaxAge: the apiserver's own bookmarks come once a minute, too
// seldom for that.
const nodeWatchTimeout = 15 * time.Second

// watchNode follows the node's Node for the sidecar. It publishes the
// node's podCIDRs for the plugins (podcidr.Watched), so an ADD reads them
// from the node instead of the API server: the copy is withdrawn while the
// Node is gone or has no podCIDRs, and withdrawn with the lock whenever the
// watch is not established (an error, a refused resume, ctx ending): the
// plugins then read the Node themselves, as without a sidecar. Every event,
// bookmark and resumed watch confirms the copy. It also keeps what the
// sidecar knows of the Node (in.seen: the metrics, the capacity warning and
// the re-creation that makes the sidecar re-mint the CNI token) current.
//
// It runs client-go's watch in a loop of its own rather than an informer or
// a RetryWatcher: neither tells its caller when a watch is established or
// a bookmark arrives, and those are what keep the copy trusted.
func (in *Installer) watchNode(ctx context.Context, pub *nodestate.Publisher) {
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
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
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
func (in *Installer) watchNodeOnce(ctx context.Context, pub *nodestate.Publisher, rv *string) error {
	api, err := in.NewAPI()
	if err != nil {
		return err
	}
	timeout := nodeWatchTimeout + rand.N(nodeWatchTimeout/5)
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second) // a stalled connection ends too
	defer cancel()
	secs := int64(timeout / time.Second)
	w, err := api.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", in.Cfg.NodeName).String(),
		ResourceVersion: *rv, AllowWatchBookmarks: true, TimeoutSeconds: &secs,
	})
	if err != nil {
		return fmt.Errorf("failed to watch node %q: %w", in.Cfg.NodeName, err)
	}
	defer w.Stop()
	if *rv != "" {
		if err := pub.Touch(); err != nil { // resumed: nothing missed up to now
			return err
		}
	}
	for e := range w.ResultChan() {
		if e.Type == watch.Error {
			return fmt.Errorf("failed to watch node %q: %w", in.Cfg.NodeName, apierrors.FromObject(e.Object))
		}
		if m, err := meta.Accessor(e.Object); err == nil {
			*rv = m.GetResourceVersion()
		}
		if err := in.nodeChanged(pub, e); err != nil {
			return err
		}
	}
	return nil
}

// nodeChanged publishes one watch event.
func (in *Installer) nodeChanged(pub *nodestate.Publisher, e watch.Event) error {
	node := in.Cfg.NodeName
	switch e.Type {
	case watch.Added, watch.Modified:
		n, ok := e.Object.(*corev1.Node)
		if !ok {
			return fmt.Errorf("failed to watch node %q: an event holds a %T", node, e.Object)
		}
		info := nodeInfo(n)
		in.seen.setNode(info)
		cidrs, err := podcidr.ByFamily(node, info.PodCIDRs)
		if err != nil || (cidrs.V4 == "" && cidrs.V6 == "") {
			return pub.Withdraw()
		}
		return pub.Publish(podcidr.NodeCIDRs{Node: node, UID: info.UID, CIDRs: cidrs})
	case watch.Deleted:
		in.seen.setNode(NodeInfo{})
		return pub.Withdraw()
	}
	return pub.Touch() // BOOKMARK: nothing changed up to its version
}
