package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"

	"github.com/vishvananda/netlink"
)

// CNICall is one plugin invocation, made as a container runtime makes it:
// CNI_* environment, network configuration on stdin, a fresh process.
type CNICall struct {
	Binary      string // path of the plugin
	Command     string // ADD, DEL, CHECK, VERSION, STATUS, GC
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Path        string // CNI_PATH
	Config      []byte
	Env         []string // extra variables
}

// CNIResult is what the plugin printed.
type CNIResult struct {
	Stdout, Stderr []byte
	Err            error
}

// Cmd is the plugin process for the call, as the runtime starts it (CNI_*
// environment, configuration on stdin), for callers that control the
// process themselves (kill it mid-command); start it with StartCmd.
func (c CNICall) Cmd() *exec.Cmd { return c.cmd(context.Background()) }

func (c CNICall) cmd(ctx context.Context) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Binary)
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+c.Command, "CNI_CONTAINERID="+c.ContainerID, "CNI_NETNS="+c.Netns,
		"CNI_IFNAME="+c.IfName, "CNI_ARGS="+c.Args, "CNI_PATH="+c.Path)
	cmd.Env = append(cmd.Env, c.Env...)
	cmd.Stdin = bytes.NewReader(c.Config)
	return cmd
}

// RunCNI execs the plugin inside the node namespace.
func (cp *ControlPlane) RunCNI(ctx context.Context, c CNICall) CNIResult {
	cmd := c.cmd(ctx)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cp.Run(cmd)
	if err != nil {
		err = fmt.Errorf("%s %s: %w: stdout=%s stderr=%s", c.Binary, c.Command, err, out.Bytes(), errb.Bytes())
	}
	return CNIResult{Stdout: out.Bytes(), Stderr: errb.Bytes(), Err: err}
}

// NodeIP is the node's own address on its uplink (a documentation range:
// it exists only inside the node namespace).
var NodeIP = &net.IPNet{IP: net.IPv4(198, 51, 100, 10).To4(), Mask: net.CIDRMask(24, 32)}

// AddUplink gives the node namespace what a real node has: an uplink
// (one end of a veth pair kept inside the node) carrying the default routes, and IP forwarding on. Proxy
// ARP for the pods' 169.254.1.1 gateway answers only when the host has a
// route to it.
func (cp *ControlPlane) AddUplink() error {
	return cp.DoInNode(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "uplink0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "uplink1"}); err != nil {
			return fmt.Errorf("failed to add uplink: %w", err)
		}
		for _, name := range []string{"uplink1", "uplink0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		link, err := netlink.LinkByName("uplink0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: NodeIP}); err != nil {
			return fmt.Errorf("failed to address the uplink: %w", err)
		}
		for _, dst := range []string{"0.0.0.0/0", "::/0"} {
			_, n, _ := net.ParseCIDR(dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: n, Scope: netlink.SCOPE_LINK}); err != nil {
				return fmt.Errorf("failed to add default route %s: %w", dst, err)
			}
		}
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+k, []byte("1"), 0o644); err != nil {
				return fmt.Errorf("failed to enable %s: %w", k, err)
			}
		}
		return nil
	})
}
