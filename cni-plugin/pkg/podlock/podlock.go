// Package podlock serializes plugin invocations for one pod on one node. The
// kubelet does this per pod already; the lock makes it hold for any caller,
// so concurrent sandboxes of a pod never interleave their steps.
//
// The lock is an abstract unix socket named after the pod's host veth: it
// lives in the network namespace every invocation on the node runs in,
// leaves no file behind, and the kernel releases it when the holder exits,
// even on SIGKILL.
package podlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Lock is a held lock.
type Lock struct{ l net.Listener }

// Acquire takes the lock called name, waiting until ctx is done.
func Acquire(ctx context.Context, name string) (*Lock, error) {
	addr := "@kdd-cni/lock/" + name
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		l, err := net.Listen("unix", addr)
		if err == nil {
			return &Lock{l: l}, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("failed to lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("failed to lock %s: another invocation for this pod holds it: %w", name, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// Release drops the lock.
func (l *Lock) Release() {
	if l != nil {
		l.l.Close()
	}
}
