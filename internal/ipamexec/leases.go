package ipamexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// defaultDataDir is host-local's default lease store.
const defaultDataDir = "/var/lib/cni/networks"

// leaseDir is host-local's store for the network: <dataDir>/<name>.
func leaseDir(netconf []byte) (string, error) {
	var c struct {
		Name string `json:"name"`
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(netconf, &c); err != nil {
		return "", fmt.Errorf("failed to parse network configuration: %w", err)
	}
	if c.Name == "" {
		return "", errors.New("network configuration has no name")
	}
	dir := c.IPAM.DataDir
	if dir == "" {
		dir = defaultDataDir
	}
	return filepath.Join(dir, c.Name), nil
}

// RemoveTornLeases deletes lease files that host-local created but never
// wrote its owner into: a host-local killed between the two (it dies with
// a killed ADD) leaves an empty file that no DEL can find and that would
// hold its address forever. It runs under host-local's own lock, so no
// host-local is between the two steps. It returns how many it removed.
func RemoveTornLeases(ctx context.Context, netconf []byte) (int, error) {
	dir, err := leaseDir(netconf)
	if err != nil {
		return 0, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // no store yet
	}
	if err != nil {
		return 0, fmt.Errorf("failed to open host-local's lock: %w", err)
	}
	defer lock.Close()
	for unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("failed to take host-local's lock: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("failed to list leases in %s: %w", dir, err)
	}
	removed := 0
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed, nil
}

// LeasesIn reads a host-local store (<dataDir>/<network>): each leased
// address's holder, from a file per address holding
// "<containerID>\r\n<ifname>" (empty for a torn lease). A missing store
// holds none. The one reader of host-local's store: health, metrics, GC
// and the tests all count through it.
func LeasesIn(dir string) (map[string]types.GCAttachment, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list leases in %s: %w", dir, err)
	}
	out := map[string]types.GCAttachment{}
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue // lock and last_reserved_ip files
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // released meanwhile
		}
		id, ifName, _ := strings.Cut(string(b), "\n")
		out[e.Name()] = types.GCAttachment{ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifName)}
	}
	return out, nil
}

// InUse counts host-local's leases of this network, by family.
func InUse(netconf []byte) (v4, v6 int, err error) {
	dir, err := leaseDir(netconf)
	if err != nil {
		return 0, 0, err
	}
	leases, err := LeasesIn(dir)
	for ip := range leases {
		if net.ParseIP(ip).To4() != nil {
			v4++
		} else {
			v6++
		}
	}
	return v4, v6, err
}

// HostLocalLeases lists the attachments (container ID, interface) that hold
// host-local leases of this network. It only reads host-local's store.
func HostLocalLeases(netconf []byte) ([]types.GCAttachment, error) {
	dir, err := leaseDir(netconf)
	if err != nil {
		return nil, err
	}
	leases, err := LeasesIn(dir)
	if err != nil {
		return nil, err
	}
	seen := map[types.GCAttachment]bool{}
	var out []types.GCAttachment
	for _, a := range leases {
		if a.ContainerID != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out, nil
}

// ReleaseStale releases, through the IPAM plugin's own DEL, every lease
// whose attachment keep rejects, asked once per attachment as it is about
// to be released. conf is the configuration DEL accepts.
func ReleaseStale(ctx context.Context, plugin string, conf []byte, base *skel.CmdArgs,
	keep func(types.GCAttachment) bool) ([]types.GCAttachment, error) {
	leases, err := HostLocalLeases(conf)
	if err != nil {
		return nil, err
	}
	var released []types.GCAttachment
	var errs []error
	for _, a := range leases {
		if keep(a) {
			continue
		}
		args := *base
		args.ContainerID, args.IfName, args.Netns = a.ContainerID, a.IfName, ""
		if err := (Call{Plugin: plugin, Config: conf, Args: &args}).Del(ctx); err != nil {
			errs = append(errs, fmt.Errorf("failed to release the lease of %s/%s: %w", a.ContainerID, a.IfName, err))
			continue
		}
		released = append(released, a)
	}
	return released, errors.Join(errs...)
}
