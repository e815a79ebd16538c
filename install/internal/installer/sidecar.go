package installer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
	"github.com/kdd-cni/kdd-cni/install/internal/metrics"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/replay"
)

// NextRefresh is when to re-mint a token issued at issued that expires at
// expiry: with a quarter of its life left, less up to a tenth of its life
// of jitter so a fleet of nodes does not refresh in step.
func NextRefresh(issued, expiry time.Time, jitter float64) time.Time {
	life := expiry.Sub(issued)
	return issued.Add(time.Duration(float64(life) * (0.75 - 0.1*jitter)))
}

// Backoff after the n-th consecutive failure: 1s, 2s, 4s ... at most 1m,
// each less up to a fifth at random, so a fleet of nodes that lost the API
// server together does not come back in step.
func Backoff(n int) time.Duration {
	d := min(time.Second<<min(n, 6), time.Minute)
	return d - rand.N(d/5)
}

// nodeCheckEvery is how often the sidecar looks for other networks'
// configurations and checks the node's capacity.
const nodeCheckEvery = 15 * time.Second

// runSidecar is install-cni's long-running part (SLEEP=true). It serves the
// plugins' metrics (METRICS_BIND_ADDRESS), reclaims leaks (reclaimLoop) and
// follows its Node (watchNode: the podCIDRs published for the plugins, the
// Node's UID and capacity). Its jobs, checked every second: drain the
// plugins' records into the metrics; replay the journal of annotation
// clears the plugin could not send; re-mint the CNI token on schedule, at
// once when the installer's own service-account token changes (e.g.
// signing-key rotation), and when the node's Node object was re-created,
// retrying with backoff; rewrite the conflist when flannel's MTU changes
// (CNI_MTU unset); warn when another network's configuration comes to sort
// before ours, and on a Node whose maxPods exceeds its podCIDR. A failed
// refresh leaves the previous files in place: they are only ever replaced
// whole. When it stops, it leaves a conflist Calico's binary accepts
// (LeaveRollbackConflist).
func (in *Installer) runSidecar(ctx context.Context, expiry time.Time) error {
	if err := in.prepareStateDir(); err != nil {
		return err
	}
	m, err := in.serveMetrics(ctx)
	if err != nil {
		return err
	}
	api, err := in.NewAPI()
	if err != nil {
		return err
	}
	events, stopEvents := in.eventRecorder(ctx, api)
	defer stopEvents()
	in.warnCapacity(ctx, api, events)
	go in.reclaimLoop(ctx)
	pub, err := nodestate.NewPodCIDRPublisher(in.Cfg.StateDir, in.Cfg.NodeName)
	if err != nil {
		return err
	}
	watched := make(chan struct{})
	go func() { in.watchNode(ctx, pub); close(watched) }()
	defer func() { <-watched }() // the copy withdrawn, the lock released
	issued := time.Now()
	next := in.schedule(issued, expiry)
	failures := 0
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	nodeCheck := time.Now().Add(nodeCheckEvery)
	for {
		reason := ""
		select {
		case <-ctx.Done():
			return in.LeaveRollbackConflist()
		case <-poll.C:
			in.replayJournal(ctx)
			if m != nil {
				if err := m.Drain(); err != nil {
					in.Log.Debug("failed to drain the invocation records", "err", err)
				}
			}
			node, _, _ := in.seen.get()
			switch {
			case fileDigest(in.Cfg.OwnTokenFile) != in.mintedWith:
				reason = "own service-account token changed"
			case !time.Now().Before(next):
				reason = "scheduled"
			case failures == 0 && node.UID != "" && node.UID != in.boundUID:
				reason = "node re-created"
			case in.mtuChanged():
				reason = "pod MTU changed"
			case time.Now().After(nodeCheck):
				nodeCheck = time.Now().Add(nodeCheckEvery)
				in.warnShadowed()
				in.warnCapacity(ctx, api, events)
			}
		}
		if reason == "" {
			continue
		}
		exp, err := in.WriteCredentials(ctx)
		if err != nil {
			failures++
			wait := Backoff(failures)
			next = time.Now().Add(wait)
			in.Log.Error("failed to refresh the CNI token", "err", err, "retryIn", wait, "currentExpiry", expiry)
			continue
		}
		failures, issued, expiry = 0, time.Now(), exp
		next = in.schedule(issued, expiry)
		in.Log.Info("refreshed the CNI token", "reason", reason, "expiry", expiry, "next", next)
	}
}

// serveMetrics starts the Prometheus endpoint on METRICS_BIND_ADDRESS
// (nil, nil when it is unset).
func (in *Installer) serveMetrics(ctx context.Context) (*metrics.Metrics, error) {
	if in.Cfg.MetricsBindAddress == "" {
		return nil, nil
	}
	m := metrics.New(metrics.Sources{
		State:       nodestate.Dir(in.Cfg.StateDir),
		IPAM:        in.ipamUsage,
		TokenExpiry: func() time.Time { _, _, exp := in.seen.get(); return exp },
	})
	serve, err := m.Serve(ctx, in.Cfg.MetricsBindAddress)
	if err != nil {
		return nil, fmt.Errorf("failed to serve metrics on METRICS_BIND_ADDRESS=%s: %w", in.Cfg.MetricsBindAddress, err)
	}
	go func() {
		if err := serve(); err != nil {
			in.Log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	in.Log.Info("serving metrics", "address", in.Cfg.MetricsBindAddress)
	return m, nil
}

// replayJournal sends the annotation clears DELs journaled while the
// datastore was unavailable, as the CNI identity, with the same guard.
func (in *Installer) replayJournal(ctx context.Context) {
	j := nodestate.Dir(in.Cfg.StateDir).Journal()
	pending, err := j.Pending()
	if err != nil || len(pending) == 0 {
		return
	}
	api, err := kube.New(kube.Access{Kubeconfig: filepath.Join(in.Cfg.HostNetDir(), config.KubeconfigName)})
	if err != nil {
		in.Log.Error("failed to replay the journal", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := replay.Journal(ctx, j, api, len(pending))
	in.Log.Info("replayed pending annotation clears", "done", n, "pending", len(pending), "err", err)
}

func (in *Installer) schedule(issued, expiry time.Time) time.Time {
	if in.RefreshEvery > 0 {
		return issued.Add(in.RefreshEvery)
	}
	return NextRefresh(issued, expiry, rand.Float64())
}

// fileDigest identifies a file's contents ("" if unreadable), following
// symlinks as projected volumes use them.
func fileDigest(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return string(s[:])
}
