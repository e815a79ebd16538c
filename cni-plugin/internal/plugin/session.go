package plugin

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/invocation"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/internal/wep"
)

// apiSession does an ADD's API work beside its kernel work: building the
// client, reading the Node's podCIDRs and (when the runtime did not pass
// them) the Pod's annotations run while host-local allocates; the
// WorkloadEndpoint PATCH runs while the veth is set up.
type apiSession struct {
	ready chan struct{} // closed when api is built (err set on failure)
	api   *kube.Client
	err   error

	node     chan result[podcidr.NodeCIDRs]
	annot    chan result[map[string]string]
	patched  chan error
	nodeDone *result[podcidr.NodeCIDRs]
	// write is the WorkloadEndpoint PATCH, opened with the client so its
	// connection, TLS handshake and the API server's request set-up are
	// done beside IPAM; its patch is sent once the addresses are known.
	write     *kube.Pending
	writeOnce sync.Once
}

// openWrite opens the PATCH once, after the first GET has set up the
// connection it then shares (or at once when there is no GET).
func (s *apiSession) openWrite(ctx context.Context, inv *command) {
	s.writeOnce.Do(func() {
		s.write = s.api.OpenPodStatusPatch(ctx, inv.Pod.Namespace, inv.Pod.Pod, kube.MergePatch)
	})
}

type result[T any] struct {
	v   T
	err error
}

// openSession starts building the client and GETs the Node (unless node is
// "": no usePodCidr) and the Pod. annotations non-nil (passed by the
// runtime) spares the GET of the Pod.
func (p *Plugin) openSession(ctx context.Context, inv *command, node string, annotations map[string]string) *apiSession {
	s := &apiSession{ready: make(chan struct{}), node: make(chan result[podcidr.NodeCIDRs], 1),
		annot: make(chan result[map[string]string], 1)}
	go func() {
		s.api, s.err = inv.API()
		if s.err == nil && node == "" && annotations != nil {
			s.openWrite(ctx, inv) // no GET to share the connection with
		}
		close(s.ready)
	}()
	if node != "" {
		go func() {
			<-s.ready
			if s.err != nil {
				s.node <- result[podcidr.NodeCIDRs]{err: s.err}
				return
			}
			start := time.Now()
			c, err := invocation.ReadPodCIDRs(ctx, s.api, node)
			inv.Time("get-node", time.Since(start))
			s.openWrite(ctx, inv)
			s.node <- result[podcidr.NodeCIDRs]{v: c, err: err}
		}()
	}
	if annotations != nil {
		s.annot <- result[map[string]string]{v: annotations}
		return s
	}
	go func() {
		<-s.ready
		if s.err != nil {
			s.annot <- result[map[string]string]{err: s.err}
			return
		}
		pod, err := s.api.GetPod(ctx, inv.Pod.Namespace, inv.Pod.Pod)
		s.openWrite(ctx, inv)
		if err != nil {
			s.annot <- result[map[string]string]{err: fmt.Errorf("failed to read the pod's annotations: %w", err)}
			return
		}
		s.annot <- result[map[string]string]{v: pod.Metadata.Annotations}
	}()
	return s
}

// nodeCIDRs waits for the Node's podCIDRs (only when the session was asked).
func (s *apiSession) nodeCIDRs() (podcidr.NodeCIDRs, error) {
	if s.nodeDone == nil {
		r := <-s.node
		s.nodeDone = &r
	}
	return s.nodeDone.v, s.nodeDone.err
}

// annotations waits for the pod's annotations.
func (s *apiSession) annotations() (map[string]string, error) {
	r := <-s.annot
	return r.v, r.err
}

// startEndpointWrite sends the WorkloadEndpoint PATCH in the background.
func (s *apiSession) startEndpointWrite(ctx context.Context, inv *command, addrs []net.IPNet) {
	s.patched = make(chan error, 1)
	go func() {
		<-s.ready
		if s.err != nil {
			s.patched <- s.err
			return
		}
		s.openWrite(ctx, inv)
		start := time.Now()
		err := wep.Send(ctx, s.write, wep.NewEndpoint(addrs, inv.Args.ContainerID))
		inv.Time("patch", time.Since(start))
		if err != nil {
			err = fmt.Errorf("failed to write the WorkloadEndpoint annotations: %w", err)
		}
		s.patched <- err
	}()
}

// close aborts the opened PATCH if its patch was never sent (ADD failed
// before its addresses were known): the API server changes nothing.
func (s *apiSession) close() {
	if s.patched != nil {
		return
	}
	<-s.ready
	s.writeOnce.Do(func() {}) // no later open
	if s.write != nil {
		s.write.Abort()
	}
}

// endpointWritten waits for the PATCH.
func (s *apiSession) endpointWritten() error { return <-s.patched }
