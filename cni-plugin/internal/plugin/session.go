package plugin

import (
	"context"
	"fmt"
	"net"

	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/datastore"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/kube"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/wep"
	"github.com/kdd-cni/kdd-cni/ipam/podcidr"
)

// apiSession does an ADD's API work beside its kernel work: building the
// client and reading the node's podCIDRs run while host-local allocates
// (from the cached podCIDRs), and the WorkloadEndpoint PATCH runs while the
// veth is set up. ADD still makes exactly two requests.
type apiSession struct {
	ready   chan struct{} // closed when api (and cidrs, if asked) are known
	api     *kube.Client
	cidrs   podcidr.CIDRs
	err     error
	patched chan error
}

// openSession starts building the client and, when needCIDRs, GETs the node.
func (p *Plugin) openSession(ctx context.Context, inv *invocation, needCIDRs bool) *apiSession {
	s := &apiSession{ready: make(chan struct{})}
	go func() {
		defer close(s.ready)
		if s.api, s.err = p.api(inv.conf); s.err != nil || !needCIDRs {
			return
		}
		s.cidrs, s.err = datastore.NodePodCIDRs(ctx, p.Env, inv.conf, s.api)
	}()
	return s
}

// nodeCIDRs waits for the node's podCIDRs.
func (s *apiSession) nodeCIDRs() (podcidr.CIDRs, error) {
	<-s.ready
	return s.cidrs, s.err
}

// startEndpointWrite sends the WorkloadEndpoint PATCH in the background. A
// JSON merge patch stores exactly what Calico's strategic-merge patch stores
// for annotations, and costs the apiserver less.
func (s *apiSession) startEndpointWrite(ctx context.Context, inv *invocation, addrs []net.IPNet) {
	s.patched = make(chan error, 1)
	go func() {
		<-s.ready
		if s.err != nil {
			s.patched <- s.err
			return
		}
		patch, err := wep.AddPatch(addrs, inv.args.ContainerID)
		if err == nil {
			err = s.api.PatchPodStatus(ctx, inv.id.Namespace, inv.id.Pod, kube.MergePatch, patch)
		}
		if err != nil {
			err = fmt.Errorf("failed to write the WorkloadEndpoint annotations: %w", err)
		}
		s.patched <- err
	}()
}

// endpointWritten waits for the PATCH.
func (s *apiSession) endpointWritten() error { return <-s.patched }
