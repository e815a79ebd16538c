package netconf

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// K8sArgs are the CNI_ARGS keys the kubelet's runtime passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,stylecheck
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,stylecheck
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,stylecheck
}

// Identity names the pod an invocation is for.
type Identity struct {
	Namespace string
	Pod       string
}

// ErrNoPod marks CNI_ARGS without K8S_POD_NAMESPACE and K8S_POD_NAME.
var ErrNoPod = errors.New("CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME")

// ParseIdentity reads the pod from CNI_ARGS (unknown keys are ignored).
func ParseIdentity(cniArgs string) (Identity, error) {
	var id Identity
	var a K8sArgs
	if err := types.LoadArgs(WithIgnoreUnknown(cniArgs), &a); err != nil {
		return id, fmt.Errorf("failed to parse CNI_ARGS: %w", err)
	}
	id.Namespace, id.Pod = string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME)
	if id.Namespace == "" || id.Pod == "" {
		return id, ErrNoPod
	}
	// They become API paths, file names and log fields: only what
	// Kubernetes accepts as names may pass.
	if !dns1123Label.MatchString(id.Namespace) || len(id.Namespace) > 63 {
		return Identity{}, fmt.Errorf("invalid K8S_POD_NAMESPACE %q: not a Kubernetes namespace name", id.Namespace)
	}
	if !dns1123Subdomain.MatchString(id.Pod) || len(id.Pod) > 253 {
		return Identity{}, fmt.Errorf("invalid K8S_POD_NAME %q: not a Kubernetes pod name", id.Pod)
	}
	return id, nil
}

// Kubernetes' name rules (RFC 1123 label for namespaces, subdomain for pods).
var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// WithIgnoreUnknown prepends IgnoreUnknown=1 so plugins that parse CNI_ARGS
// strictly (ours, host-local) accept keys they do not know.
func WithIgnoreUnknown(cniArgs string) string {
	for _, kv := range strings.Split(cniArgs, ";") {
		if strings.EqualFold(kv, "IgnoreUnknown=1") || strings.EqualFold(kv, "IgnoreUnknown=true") {
			return cniArgs
		}
	}
	if cniArgs == "" {
		return "IgnoreUnknown=1"
	}
	return "IgnoreUnknown=1;" + cniArgs
}
