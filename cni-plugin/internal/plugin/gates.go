package plugin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/policywait"
)

// Readiness gates are polled as Calico polls them (every 5 s, for at most
// 30 s), except that the first poll is immediate.
const (
	gateInterval = 5 * time.Second
	gateTimeout  = 30 * time.Second
)

// awaitReadinessGates returns once every readiness_gates URL answers a
// 2xx or 3xx status, as Calico's gates count ready (a redirect with a
// Location is followed, as Go's client does; its answer counts).
// It runs before ADD's own deadline starts.
func awaitReadinessGates(inv *command) error {
	if len(inv.Conf.ReadinessGates) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	client := &http.Client{Timeout: gateInterval}
	for _, url := range inv.Conf.ReadinessGates {
		for {
			err := probeGate(ctx, client, url)
			if err == nil {
				break
			}
			inv.Log.Warn("readiness gate not ready", "url", url, "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("readiness gate %s not ready after %s: %w", url, gateTimeout, err)
			case <-time.After(gateInterval):
			}
		}
	}
	return nil
}

func probeGate(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// waitForPolicy blocks, when policy_setup_timeout_seconds asks for it, until
// Felix has written the endpoint's status file (its policy is programmed).
// Like Calico, a timeout only warns: the pod starts anyway.
func waitForPolicy(inv *command) {
	secs := inv.Conf.PolicySetupTimeoutSeconds
	if secs <= 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	name := policywait.StatusFile(inv.Pod.Namespace, inv.Pod.Pod, policywait.KubernetesEndpoint)
	if err := policywait.Wait(ctx, inv.Conf.EndpointStatusDir, name); err != nil {
		inv.Log.Warn("timed out waiting for Felix to program the endpoint's policy; the pod starts anyway",
			"dir", inv.Conf.EndpointStatusDir, "file", name, "err", err, "waited", time.Since(start))
		return
	}
	inv.Log.Info("policy programmed by Felix", "waited", time.Since(start))
}
