// Package flannel reads what a flanneld on the node publishes for the CNI:
// its subnet.env (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
// FLANNEL_IPMASQ), written once its backend is up. install-cni takes the
// pods' MTU from it when CNI_MTU is not set: a VXLAN backend costs 50 bytes.
package flannel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// DefaultSubnetFile is where flanneld writes subnet.env (its --subnet-file).
const DefaultSubnetFile = "/run/flannel/subnet.env"

// ParseMTU returns FLANNEL_MTU from a subnet.env's contents.
func ParseMTU(b []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.TrimSpace(k) != "FLANNEL_MTU" {
			continue
		}
		v = strings.TrimSpace(v)
		mtu, err := strconv.Atoi(v)
		if err != nil || mtu < netconf.MinMTU || mtu > 65535 {
			return 0, fmt.Errorf("invalid FLANNEL_MTU=%q: want an integer from %d to 65535", v, netconf.MinMTU)
		}
		return mtu, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no FLANNEL_MTU")
}

// MTU reads FLANNEL_MTU from the subnet file at path. found is false when
// there is no file (no flannel on the node, or not up yet).
func MTU(path string) (mtu int, found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("failed to read flannel's subnet file: %w", err)
	}
	if mtu, err = ParseMTU(b); err != nil {
		return 0, true, fmt.Errorf("failed to read the MTU from %s: %w", path, err)
	}
	return mtu, true, nil
}
