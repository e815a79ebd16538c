// Package datastore connects a kdd-cni binary to its datastore, the
// Kubernetes API, as a netconf and the environment seeds describe, and
// answers whether it is ready for pods (CNI STATUS). Shared by `calico` and
// the `podcidr` IPAM shim.
package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/buildinfo"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/kube"
	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/netconf"
	"github.com/kdd-cni/kdd-cni/ipam/podcidr"
)

// NewClient builds the API client from the netconf over the environment seeds.
func NewClient(env netconf.Env, conf *netconf.NetConf, timeout time.Duration) (*kube.Client, error) {
	a := conf.APIAccess(env)
	return kube.New(kube.Access{
		Kubeconfig: a.Kubeconfig, Server: a.Server, Token: a.Token,
		CertFile: a.CertFile, KeyFile: a.KeyFile, CAFile: a.CAFile, InsecureTLS: a.InsecureTLS,
		UserAgent: buildinfo.String("kdd-cni"), Timeout: timeout,
	})
}

// NodeCIDRs resolves this node's name and reads its spec.podCIDRs.
func NodeCIDRs(ctx context.Context, env netconf.Env, conf *netconf.NetConf, api *kube.Client) (string, []string, error) {
	nodename, err := conf.ResolveNodename(env)
	if err != nil {
		return "", nil, err
	}
	node := conf.PodCIDRNode(nodename)
	cidrs, err := api.NodePodCIDRs(ctx, node)
	if err != nil {
		return node, nil, fmt.Errorf("failed to read node %q from the API server: %w", node, err)
	}
	return node, cidrs, nil
}

// NodePodCIDRs reads this node's podCIDRs by family.
func NodePodCIDRs(ctx context.Context, env netconf.Env, conf *netconf.NetConf, api *kube.Client) (podcidr.CIDRs, error) {
	node, cidrs, err := NodeCIDRs(ctx, env, conf, api)
	if err != nil {
		return podcidr.CIDRs{}, err
	}
	return podcidr.ByFamily(node, cidrs)
}

// Ready reports why the plugin cannot serve pods: the API server does not
// answer the configured identity, or the node lacks a podCIDR family that
// the configuration (stdin) names. nil means ready.
func Ready(ctx context.Context, env netconf.Env, conf *netconf.NetConf, stdin []byte, timeout time.Duration) error {
	fams, err := podcidr.Symbols(stdin)
	if err != nil {
		return err
	}
	api, err := NewClient(env, conf, timeout)
	if err != nil {
		return err
	}
	node, cidrs, err := NodeCIDRs(ctx, env, conf, api)
	if err != nil || !fams.Any() {
		return err
	}
	byFamily, err := podcidr.ByFamily(node, cidrs)
	if err != nil {
		return err
	}
	return fams.Check(node, byFamily)
}

// The node's podCIDRs are cached on the node: Kubernetes never changes a
// Node's podCIDRs once set, so ADD can allocate from the cache while it
// confirms them with the API server in parallel (and fails, refreshing the
// cache, in the rare case the Node was re-created with other CIDRs).
func cachePath(stateDir, node string) string {
	return filepath.Join(stateDir, "podcidrs", node+".json")
}

// CachedPodCIDRs reads the cache; ok is false when there is none.
func CachedPodCIDRs(stateDir, node string) (podcidr.CIDRs, bool) {
	var c podcidr.CIDRs
	b, err := os.ReadFile(cachePath(stateDir, node))
	if err != nil || json.Unmarshal(b, &c) != nil || (c.V4 == "" && c.V6 == "") {
		return podcidr.CIDRs{}, false
	}
	return c, true
}

// StorePodCIDRs writes the cache atomically.
func StorePodCIDRs(stateDir, node string, c podcidr.CIDRs) error {
	path := cachePath(stateDir, node)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
