package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// calico chained with the real portmap through libcni, as a runtime runs
// it: ADD with a port mapping, traffic to the node's host port reaches the
// pod, CHECK with libcni's cached result, DEL.
func TestChainedPortmap(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	var plugin map[string]any
	if err := json.Unmarshal(e.conf(), &plugin); err != nil {
		t.Fatal(err)
	}
	delete(plugin, "cniVersion")
	delete(plugin, "name")
	list := map[string]any{
		"cniVersion": "1.1.0", "name": networkName,
		"plugins": []any{plugin, map[string]any{
			"type": "portmap", "backend": "nftables", "snat": true,
			"capabilities": map[string]bool{"portMappings": true},
		}},
	}
	b, _ := json.Marshal(list)
	conf, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	p := e.newPod("web", false)
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: p.ContainerID, NetNS: p.Netns.Path, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", e.ns}, {"K8S_POD_NAME", "web"}},
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{
			{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
		}},
	}
	ctx := context.Background()
	inNode(t, func() error {
		res, err := cni.AddNetworkList(ctx, conf, rt)
		if err == nil {
			p.Result, err = types100.NewResultFromResult(res)
		}
		return err
	})

	// A server in the pod, a client on the node dialing the host port.
	var ln net.Listener
	if err := p.Netns.Do(func() (err error) { ln, err = net.Listen("tcp", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "hello from the pod")
			c.Close()
		}
	}()
	var got string
	inNode(t, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(harness.NodeIP.IP.String(), "18080"), 3*time.Second)
		if err != nil {
			return fmt.Errorf("dial the host port: %w", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	if got != "hello from the pod" {
		t.Errorf("host port answered %q", got)
	}

	inNode(t, func() error { return cni.CheckNetworkList(ctx, conf, rt) })
	inNode(t, func() error { return cni.DelNetworkList(ctx, conf, rt) })
	inNode(t, func() error { return cni.DelNetworkList(ctx, conf, rt) }) // again: idempotent
	e.assertGone(p, p.IPs())
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}
