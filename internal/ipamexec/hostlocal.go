package ipamexec

// host-local in-process: when the delegated IPAM is host-local, ADD, DEL
// and CHECK run host-local's own allocator and disk store (the packages its
// binary is built from, from the containernetworking/plugins module this
// project pins) instead of exec'ing it. The leases, their files, the lock
// and the range iteration with its last_reserved_ip are host-local's, so
// in-process calls and exec'd host-local binaries share one store at any
// time, both ways. This saves the exec (about 2.5 ms of a serial ADD, more
// when host-local competes for the CPU with the TLS handshake).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// HostLocal is the IPAM type run in-process.
const HostLocal = "host-local"

// inProcess reports whether c runs in-process: host-local without
// resolvConf (its DNS file parser is not a package of the module).
func (c Call) inProcess() (*allocator.IPAMConfig, bool) {
	if c.Plugin != HostLocal {
		return nil, false
	}
	conf, _, err := allocator.LoadIPAMConfig(c.Config, netconf.WithIgnoreUnknown(c.Args.Args))
	if err != nil || conf.ResolvConf != "" {
		return nil, false // the binary reports the error, in its own words
	}
	return conf, true
}

// hostLocal runs command with host-local's packages, bounded by ctx: a
// store lock held past the deadline makes the command fail; the allocation
// waiting on it ends with this process, as an exec'd host-local would be
// killed with it.
func hostLocal(ctx context.Context, conf *allocator.IPAMConfig, command, containerID, ifName string) (*types100.Result, error) {
	type outcome struct {
		r   *types100.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := runHostLocal(conf, command, containerID, ifName)
		done <- outcome{r, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			return nil, fmt.Errorf("failed to run IPAM %s (host-local, in-process): %w", command, o.err)
		}
		return o.r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("failed to run IPAM %s (host-local, in-process) by the command's deadline: %w", command, ctx.Err())
	}
}

// runHostLocal is host-local's ADD, DEL and CHECK, step for step.
func runHostLocal(conf *allocator.IPAMConfig, command, containerID, ifName string) (*types100.Result, error) {
	store, err := disk.New(conf.Name, conf.DataDir)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	switch command {
	case "CHECK":
		if !store.FindByID(containerID, ifName) {
			return nil, fmt.Errorf("host-local: Failed to find address added by container %v", containerID)
		}
		return nil, nil
	case "DEL":
		var errs []error
		for idx := range conf.Ranges {
			if err := allocator.NewIPAllocator(&conf.Ranges[idx], store, idx).Release(containerID, ifName); err != nil {
				errs = append(errs, err)
			}
		}
		return nil, errors.Join(errs...)
	}
	return allocate(conf, store, containerID, ifName)
}

// allocate takes one address from each range set, and the requested ones
// (CNI_ARGS IP=, runtimeConfig ips) from the set they fall in; on any
// failure it releases what it took.
func allocate(conf *allocator.IPAMConfig, store *disk.Store, containerID, ifName string) (*types100.Result, error) {
	requested := map[string]net.IP{}
	for _, ip := range conf.IPArgs {
		requested[ip.String()] = ip
	}
	result := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, Routes: conf.Routes}
	var taken []*allocator.IPAllocator
	release := func() {
		for _, a := range taken {
			_ = a.Release(containerID, ifName)
		}
	}
	for idx := range conf.Ranges {
		set := &conf.Ranges[idx]
		var want net.IP
		for k, ip := range requested {
			if set.Contains(ip) {
				want = ip
				delete(requested, k)
				break
			}
		}
		a := allocator.NewIPAllocator(set, store, idx)
		ipc, err := a.Get(containerID, ifName, want)
		if err != nil {
			release()
			return nil, fmt.Errorf("failed to allocate for range %d: %w", idx, err)
		}
		taken = append(taken, a)
		result.IPs = append(result.IPs, ipc)
	}
	if len(requested) > 0 {
		release()
		var left []string
		for k := range requested {
			left = append(left, k)
		}
		return nil, fmt.Errorf("failed to allocate all requested IPs: %s", strings.Join(left, " "))
	}
	return result, nil
}
