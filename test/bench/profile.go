package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// stepProfile is where a serial ADD's time goes, as medians.
type stepProfile struct {
	n    int                      // kdd-cni ADDs profiled
	ours map[string]time.Duration // step → median
	at   map[string]time.Duration // timeline event → median time after the configuration was read
	// ptp: its start-up, its host-local exec, and the rest (veth, routes).
	ptp map[string]time.Duration
}

// The profile's rows: kdd-cni's record keys, what they are, and whether
// they are on the critical path or run beside another step.
var profileRows = []struct{ key, what string }{
	{"start-up", "process start-up: exec → configuration read (runtime init, Go init)"},
	{"credentials", "credentials: kubeconfig loaded, client built (beside host-local)"},
	{"connect", "TCP connect to the apiserver (beside host-local)"},
	{"tls-handshake", "TLS handshake (beside host-local)"},
	{"get-node", "GET node, only without the sidecar's podCIDRs (beside host-local)"},
	{"host-local", "host-local allocation (in-process: its allocator and lease store)"},
	{"ipam", "critical path to here: start → allocation confirmed"},
	{"ipam-wait", "of which not host-local: lock, marks, podCIDRs, any wait for the GET"},
	{"veth", "veth pair, addresses, routes, sysctls"},
	{"patch", "PATCH pods/status, patch sent → answer (opened beside host-local; beside the veth)"},
	{"dataplane+endpoint", "critical path: max(veth, PATCH) and the plan"},
	{"total", "in-process total (configuration read → result written)"},
	{"exit", "record written → exit seen by the caller"},
}

// The timeline's rows: when each event of a serial ADD happened, after its
// configuration was read (kdd-cni's record, "at").
var timelineRows = []struct{ key, what string }{
	{"tls-done", "TLS handshake done (the connection opened beside host-local)"},
	{"allocated", "addresses allocated (host-local); the veth set-up starts"},
	{"patch-sent", "PATCH written, headers and body (the body waits for the handshake)"},
	{"veth-done", "veth pair, addresses, routes and sysctls done"},
	{"patch-answered", "PATCH answer's first byte (the apiserver and etcd done)"},
	{"total", "result written"},
}

// profile reads kdd-cni's own records of the serial pass (its metrics
// store) and pairs each ADD with when the bench exec'd it; then times ptp's
// parts the same way from outside.
func (b *bench) profile() (stepProfile, error) {
	var recs []nodestate.OpRecord
	for range 2 { // the store drains in two phases
		r, skipped, err := b.records.Drain()
		if err != nil || skipped > 0 {
			return stepProfile{}, fmt.Errorf("read kdd-cni's records: %v (%d skipped)", err, skipped)
		}
		recs = append(recs, r...)
	}
	var adds []nodestate.OpRecord
	for _, r := range recs {
		if r.Command == "ADD" {
			adds = append(adds, r)
		}
	}
	starts := b.execStarts["ADD"]
	if len(adds) != len(starts) {
		return stepProfile{}, fmt.Errorf("profile: %d ADD records for %d ADDs exec'd", len(adds), len(starts))
	}
	lat := b.results["serial"][ours]["ADD"]
	steps, at := map[string][]time.Duration{}, map[string][]time.Duration{}
	for i, r := range adds {
		steps["start-up"] = append(steps["start-up"], r.Time.Sub(starts[i]))
		steps["total"] = append(steps["total"], secs(r.Seconds))
		if len(lat) == len(adds) {
			steps["exit"] = append(steps["exit"], lat[i].Latency-r.Time.Sub(starts[i])-secs(r.Seconds))
		}
		for k, v := range r.Steps {
			steps[k] = append(steps[k], secs(v))
		}
		for k, v := range r.At {
			at[k] = append(at[k], secs(v))
		}
		if ipam, ok := r.Steps["ipam"]; ok {
			steps["ipam-wait"] = append(steps["ipam-wait"], secs(ipam-r.Steps["host-local"]))
		}
	}
	p := stepProfile{n: len(adds), ours: map[string]time.Duration{}, at: map[string]time.Duration{}, ptp: map[string]time.Duration{}}
	for k, ds := range steps {
		p.ours[k] = percentile(ds, 50)
	}
	for k, ds := range at {
		p.at[k] = percentile(ds, 50)
	}
	hl, err := b.hostLocalAlone(20)
	if err != nil {
		return p, err
	}
	p.ptp["host-local"] = hl
	return p, nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// hostLocalAlone is the median of n host-local ADDs exec'd directly with
// ptp's configuration (each released again), as ptp execs it.
func (b *bench) hostLocalAlone(n int) (time.Duration, error) {
	var ds []time.Duration
	var ptp *plugin
	for _, p := range b.plugins {
		if p.name == floor {
			ptp = p
		}
	}
	for i := 0; i < n; i++ {
		for _, cmd := range []string{"ADD", "DEL"} {
			c := exec.Command(filepath.Join(b.bin, "host-local"))
			c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, fmt.Sprintf("CNI_CONTAINERID=bench-hl-%d", i),
				"CNI_NETNS="+b.netns[i].Path, "CNI_IFNAME=eth0", "CNI_PATH="+b.bin)
			c.Stdin = bytes.NewReader(ptp.conf)
			start := time.Now()
			if out, err := c.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("host-local %s: %w: %s", cmd, err, out)
			}
			if cmd == "ADD" {
				ds = append(ds, time.Since(start))
			}
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return percentile(ds, 50), nil
}
