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

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// defaultDataDir is host-local's default lease store.
const defaultDataDir = "/var/lib/cni/networks"

// HostLocalLeases lists the attachments (container ID, interface) that hold
// host-local leases of this network. It only reads host-local's store: a
// file per IP holding "<containerID>\r\n<ifname>".
func HostLocalLeases(netconf []byte) ([]types.GCAttachment, error) {
	var c struct {
		Name string `json:"name"`
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(netconf, &c); err != nil {
		return nil, fmt.Errorf("failed to parse network configuration: %w", err)
	}
	if c.Name == "" {
		return nil, errors.New("network configuration has no name")
	}
	dir := c.IPAM.DataDir
	if dir == "" {
		dir = defaultDataDir
	}
	dir = filepath.Join(dir, c.Name)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list leases in %s: %w", dir, err)
	}
	seen := map[types.GCAttachment]bool{}
	var out []types.GCAttachment
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue // lock and last_reserved_ip files
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // released meanwhile
		}
		id, ifName, _ := strings.Cut(string(b), "\n")
		a := types.GCAttachment{ContainerID: strings.TrimSpace(id), IfName: strings.TrimSpace(ifName)}
		if a.ContainerID != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out, nil
}

// ReleaseStale releases, through the IPAM plugin's own DEL, every lease
// whose attachment valid rejects. conf is the configuration DEL accepts.
func ReleaseStale(ctx context.Context, plugin string, conf []byte, base *skel.CmdArgs,
	valid func(types.GCAttachment) bool) ([]types.GCAttachment, error) {
	leases, err := HostLocalLeases(conf)
	if err != nil {
		return nil, err
	}
	var released []types.GCAttachment
	var errs []error
	for _, a := range leases {
		if valid(a) {
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
