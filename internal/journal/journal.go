// Package journal keeps, on the node, the WorkloadEndpoint clears that a
// DEL could not send because the datastore was unreachable or refused it.
// DEL never fails for that reason: it records the clear here (one file per
// sandbox, written atomically) and any later plugin invocation, or
// install-cni's sidecar, replays it with the same containerID guard.
package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/wep"
)

// Entry is one pending annotation clear.
type Entry struct {
	Namespace   string    `json:"namespace"`
	Pod         string    `json:"pod"`
	ContainerID string    `json:"containerID"`
	Recorded    time.Time `json:"recorded"`
	Reason      string    `json:"reason"`
	// NotBefore defers the replay (e.g. until a killed ADD's PATCH, still
	// in flight, has surely landed).
	NotBefore time.Time `json:"notBefore,omitempty"`
	// Reassert, when set, makes this entry restore ContainerID's
	// annotations instead of clearing them (see Reassert).
	Reassert *Reassert `json:"reassert,omitempty"`
}

// Reassert restores a live sandbox's annotations (Endpoint) if the PATCH of
// an older sandbox of the same pod (one of Guards), in flight when that
// sandbox's ADD died, landed over them. Guarded: it changes nothing unless
// the annotations name one of Guards.
type Reassert struct {
	wep.Endpoint
	Guards []string `json:"guards"`
}

func (e Entry) file() string {
	// Names are validated Kubernetes names and CNI container IDs: safe in
	// a file name.
	kind := ""
	if e.Reassert != nil {
		kind = "_reassert"
	}
	return e.Namespace + "_" + e.Pod + "_" + e.ContainerID + kind + ".json"
}

// Record writes an entry to dir atomically.
func Record(dir string, e Entry) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create journal %s: %w", dir, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, e.file()), b, 0o600); err != nil {
		return fmt.Errorf("failed to write journal entry: %w", err)
	}
	return nil
}

// Pending lists the entries in dir, oldest first. A missing dir is empty.
func Pending(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read journal %s: %w", dir, err)
	}
	var out []Entry
	for _, d := range des {
		if !strings.HasSuffix(d.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, d.Name()))
		if err != nil {
			continue // replayed meanwhile
		}
		var e Entry
		if json.Unmarshal(b, &e) != nil || e.Namespace == "" || e.Pod == "" || e.ContainerID == "" {
			os.Remove(filepath.Join(dir, d.Name())) // unreadable: nothing can be replayed
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Recorded.Before(out[j].Recorded) })
	return out, nil
}

// Forget removes an entry (gone already is fine).
func Forget(dir string, e Entry) error {
	if err := os.Remove(filepath.Join(dir, e.file())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove journal entry: %w", err)
	}
	return nil
}

// API is what replay needs from the datastore.
type API interface {
	PatchPodStatus(ctx context.Context, namespace, name, patchType string, patch []byte) error
	GetPod(ctx context.Context, namespace, name string) (*kube.Pod, error)
}

// Replay settles the pending clears of up to limit pods (oldest first) and
// forgets them. A pod with one entry costs one guarded PATCH. A pod with
// several (an outage that outlived many sandboxes) costs a GET to see which
// sandbox owns the annotations, then that one entry's guarded PATCH; the
// others are stale by definition. Replay stops at the first failure: the
// datastore is still unhealthy, and a later invocation tries again.
func Replay(ctx context.Context, dir string, api API, limit int) (done int, err error) {
	entries, err := Pending(dir)
	if err != nil {
		return 0, err
	}
	var order []string
	byPod := map[string][]Entry{}
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
			if err := Forget(dir, e); err != nil {
				return done, err
			}
		}
		done++
	}
	return done, nil
}

// settle replays one pod's entries: the clears first, then the reasserts
// (which undo a late PATCH of an older sandbox, cleared or not).
func settle(ctx context.Context, api API, group []Entry) error {
	var clears []Entry
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

func settleClears(ctx context.Context, api API, group []Entry) error {
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

// PendingFor lists the container IDs of other sandboxes of a pod with a
// pending clear: their annotation PATCH may still land.
func PendingFor(dir, namespace, pod, self string) []string {
	entries, _ := Pending(dir)
	var out []string
	for _, e := range entries {
		if e.Namespace == namespace && e.Pod == pod && e.Reassert == nil && e.ContainerID != self {
			out = append(out, e.ContainerID)
		}
	}
	return out
}
