// Package cri asks the node's container runtime, over its CRI socket, which
// pod sandboxes it holds: the live attachments that leak reclamation must
// keep. Read-only: it only lists.
package cri

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox is one pod sandbox the runtime holds.
type Sandbox struct {
	ID        string
	Namespace string
	Name      string
	Ready     bool
}

// ListSandboxes lists every pod sandbox the runtime at endpoint
// (unix:///path or /path) holds, ready or not: a sandbox that is not ready
// still gets its DEL from the kubelet, so its attachment is not a leak.
func ListSandboxes(ctx context.Context, endpoint string) ([]Sandbox, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("failed to connect to the runtime at %s: %w", endpoint, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("failed to list pod sandboxes from the runtime at %s: %w", endpoint, err)
	}
	out := make([]Sandbox, 0, len(resp.Items))
	for _, s := range resp.Items {
		sb := Sandbox{ID: s.Id, Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY}
		if m := s.Metadata; m != nil {
			sb.Namespace, sb.Name = m.Namespace, m.Name
		}
		out = append(out, sb)
	}
	return out, nil
}
