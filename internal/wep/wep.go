// Package wep owns the WorkloadEndpoint record of Calico's Kubernetes
// datastore: three annotations on the Pod, written through pods/status. Felix
// and calicoctl synthesize the WorkloadEndpoint from the Pod and read these.
// It builds the patches (pure) and sends them: the write, the guarded clear
// and the guarded reassert.
package wep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// The annotations, byte-compatible with Calico.
const (
	AnnotationPodIP       = "cni.projectcalico.org/podIP"
	AnnotationPodIPs      = "cni.projectcalico.org/podIPs"
	AnnotationContainerID = "cni.projectcalico.org/containerID"
)

// Endpoint is one sandbox's WorkloadEndpoint record, the values of the
// three annotations: the write, the guarded clear and the reassert are all
// built from it, and the journal stores it.
type Endpoint struct {
	PodIP       string `json:"podIP"`  // the first address, in CIDR form
	PodIPs      string `json:"podIPs"` // all of them, comma-joined
	ContainerID string `json:"containerID"`
}

// NewEndpoint is the record of sandbox containerID holding ips.
func NewEndpoint(ips []net.IPNet, containerID string) Endpoint {
	cidrs := make([]string, len(ips))
	for i, ip := range ips {
		cidrs[i] = ip.String()
	}
	e := Endpoint{PodIPs: strings.Join(cidrs, ","), ContainerID: containerID}
	if len(cidrs) > 0 {
		e.PodIP = cidrs[0]
	}
	return e
}

// AddPatch is the patch ADD sends (valid as a JSON merge patch and as a
// strategic-merge patch, with the same result).
func (e Endpoint) AddPatch() ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"annotations": map[string]string{
				AnnotationPodIP:       e.PodIP,
				AnnotationPodIPs:      e.PodIPs,
				AnnotationContainerID: e.ContainerID,
			},
		},
	})
}

// ReassertPatch restores the record only if the annotations name guard (an
// older sandbox whose late PATCH landed over them).
func (e Endpoint) ReassertPatch(guard string) ([]byte, error) {
	return json.Marshal([]patchOp{
		{"test", annotationPath(AnnotationContainerID), guard},
		{"add", annotationPath(AnnotationPodIP), e.PodIP},
		{"add", annotationPath(AnnotationPodIPs), e.PodIPs},
		{"add", annotationPath(AnnotationContainerID), e.ContainerID},
	})
}

// patchOp is one JSON patch operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value string `json:"value"`
}

// annotationPath is an annotation's JSON pointer.
func annotationPath(key string) string {
	return "/metadata/annotations/" + strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

// ReleasePatch is the JSON patch DEL sends: it blanks podIP and podIPs (as
// Calico does, keeping containerID) only if containerID still names this
// sandbox. The "test" makes the guard atomic in one request: the apiserver
// answers 422 and changes nothing when a newer sandbox owns the annotations.
// (DEL knows only the sandbox, not its addresses.)
func (e Endpoint) ReleasePatch() ([]byte, error) {
	return json.Marshal([]patchOp{
		{"test", annotationPath(AnnotationContainerID), e.ContainerID},
		{"add", annotationPath(AnnotationPodIP), ""},
		{"add", annotationPath(AnnotationPodIPs), ""},
	})
}

// UnownedReleasePatch blanks podIP and podIPs of a Pod whose annotations
// name no sandbox (written by a plugin that did not record one), only if
// the Pod is still the object read: same uid, same resourceVersion. Any
// write in between makes the apiserver answer 422 and change nothing.
func UnownedReleasePatch(uid, resourceVersion string) ([]byte, error) {
	return json.Marshal([]patchOp{
		{"test", "/metadata/uid", uid},
		{"test", "/metadata/resourceVersion", resourceVersion},
		{"add", annotationPath(AnnotationPodIP), ""},
		{"add", annotationPath(AnnotationPodIPs), ""},
	})
}

// API is what sending the patches needs from the datastore.
type API interface {
	PatchPodStatus(ctx context.Context, namespace, name, patchType string, patch []byte) error
	GetPod(ctx context.Context, namespace, name string) (*kube.Pod, error)
}

// Send stores a sandbox's annotations (ADD) through a PATCH opened before
// the addresses were known (kube.Client.OpenPodStatusPatch). A JSON merge
// patch stores exactly what Calico's strategic-merge patch stores, and
// costs the apiserver less.
func Send(ctx context.Context, write *kube.Pending, e Endpoint) error {
	patch, err := e.AddPatch()
	if err != nil {
		write.Abort()
		return err
	}
	return write.Send(ctx, patch)
}

// Clear sends the guarded clear for one sandbox: one request when the
// annotations name this sandbox (cleared), or the pod is gone. When the
// guard fails (422), a GET tells why: another sandbox owns the annotations
// (nothing to clear), or none is named at all, and then the addresses are
// blanked under a uid + resourceVersion precondition, as Calico's DEL does,
// so Felix stops treating them as the pod's.
func Clear(ctx context.Context, api API, namespace, pod string, e Endpoint) error {
	patch, err := e.ReleasePatch()
	if err != nil {
		return err
	}
	if failed, err := guarded(api.PatchPodStatus(ctx, namespace, pod, kube.JSONPatch, patch)); !failed || err != nil {
		return err
	}
	return clearUnowned(ctx, api, namespace, pod)
}

// guarded reads the answer to a guarded JSON patch: failed is true when a
// "test" op did not hold (422), and err is nil for that, for success and for
// a pod that is gone (404).
func guarded(patchErr error) (failed bool, err error) {
	switch {
	case patchErr == nil, errors.Is(patchErr, kube.ErrNotFound):
		return false, nil
	case errors.Is(patchErr, kube.ErrInvalid):
		return true, nil
	}
	return false, patchErr
}

// unownedClearAttempts bounds the read-and-patch rounds of clearUnowned
// against a Pod that keeps changing (each round is a GET and a PATCH).
const unownedClearAttempts = 5

// clearUnowned blanks addresses no sandbox is named for.
func clearUnowned(ctx context.Context, api API, namespace, pod string) error {
	for range unownedClearAttempts {
		p, err := api.GetPod(ctx, namespace, pod)
		switch {
		case errors.Is(err, kube.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		a := p.Metadata.Annotations
		if _, owned := a[AnnotationContainerID]; owned || (a[AnnotationPodIP] == "" && a[AnnotationPodIPs] == "") {
			return nil
		}
		patch, err := UnownedReleasePatch(p.Metadata.UID, p.Metadata.ResourceVersion)
		if err != nil {
			return err
		}
		if changed, err := guarded(api.PatchPodStatus(ctx, namespace, pod, kube.JSONPatch, patch)); !changed || err != nil {
			return err
		}
	}
	return fmt.Errorf("failed to clear the addresses of pod %s/%s: it changed under each of %d attempts", namespace, pod, unownedClearAttempts)
}

// Reassert restores a sandbox's annotations if they name one of guards: one
// guarded PATCH per guard until one applies (422: not that guard).
func Reassert(ctx context.Context, api API, namespace, pod string, e Endpoint, guards []string) error {
	for _, g := range guards {
		patch, err := e.ReassertPatch(g)
		if err != nil {
			return err
		}
		if failed, err := guarded(api.PatchPodStatus(ctx, namespace, pod, kube.JSONPatch, patch)); !failed || err != nil {
			return err
		}
	}
	return nil
}
