// Package replay sends the WorkloadEndpoint clears and reasserts the
// journal holds (nodestate.Journal): any plugin invocation replays a few,
// install-cni's sidecar all of them, each with its containerID guard.
package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/wep"
)

// API is what replay needs from the datastore.
type API interface {
	PatchPodStatus(ctx context.Context, namespace, name, patchType string, patch []byte) error
	GetPod(ctx context.Context, namespace, name string) (*kube.Pod, error)
}

// Journal settles the journal's pending clears of up to limit pods (oldest first) and
// forgets them. A pod with one entry costs one guarded PATCH. A pod with
// several (an outage that outlived many sandboxes) costs a GET to see which
// sandbox owns the annotations, then that one entry's guarded PATCH; the
// others are stale by definition. Replay stops at the first failure: the
// datastore is still unhealthy, and a later invocation tries again.
func Journal(ctx context.Context, j nodestate.Journal, api API, limit int) (done int, err error) {
	entries, err := j.Pending()
	if err != nil {
		return 0, err
	}
	var order []string
	byPod := map[string][]nodestate.Entry{}
	now := time.Now()
	for _, e := range entries {
		if now.Before(e.NotBefore) {
			continue
		}
		key := e.Namespace + "/" + e.Pod
		if byPod[key] == nil {
			order = append(order, key)
		}
		byPod[key] = append(byPod[key], e)
	}
	for _, key := range order {
		if done >= limit {
			break
		}
		group := byPod[key]
		if err := settle(ctx, api, group); err != nil {
			return done, fmt.Errorf("failed to replay the annotation clear of %s: %w", key, err)
		}
		for _, e := range group {
			if err := j.Forget(e); err != nil {
				return done, err
			}
		}
		done++
	}
	return done, nil
}

// settle replays one pod's entries: the clears first, then the reasserts
// (which undo a late PATCH of an older sandbox, cleared or not).
func settle(ctx context.Context, api API, group []nodestate.Entry) error {
	var clears []nodestate.Entry
	for _, e := range group {
		if e.Reassert == nil {
			clears = append(clears, e)
		}
	}
	if len(clears) > 0 {
		if err := settleClears(ctx, api, clears); err != nil {
			return err
		}
	}
	for _, e := range group {
		if e.Reassert != nil {
			ep := e.Reassert.Endpoint
			ep.ContainerID = e.ContainerID // the same; entries of earlier versions lack it
			if err := wep.Reassert(ctx, api, e.Namespace, e.Pod, ep, e.Reassert.Guards); err != nil {
				return err
			}
		}
	}
	return nil
}

func settleClears(ctx context.Context, api API, group []nodestate.Entry) error {
	e := group[0]
	if len(group) == 1 {
		return wep.Clear(ctx, api, e.Namespace, e.Pod, wep.Endpoint{ContainerID: e.ContainerID})
	}
	pod, err := api.GetPod(ctx, e.Namespace, e.Pod)
	if errors.Is(err, kube.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	owner := pod.Metadata.Annotations[wep.AnnotationContainerID]
	for _, e := range group {
		if e.ContainerID == owner {
			return wep.Clear(ctx, api, e.Namespace, e.Pod, wep.Endpoint{ContainerID: e.ContainerID})
		}
	}
	return nil // no pending clear concerns the sandbox that owns the annotations
}
