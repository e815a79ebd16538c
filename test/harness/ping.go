package harness

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var pingID atomic.Uint32

// Ping sends one ICMP echo from inside n to dst and waits for the reply.
func (n *NetNS) Ping(dst net.IP, timeout time.Duration) error {
	return n.Do(func() error {
		network, proto := "ip4:icmp", 1
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if dst.To4() == nil {
			network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
		}
		c, err := icmp.ListenPacket(network, "")
		if err != nil {
			return fmt.Errorf("failed to open ICMP socket: %w", err)
		}
		defer c.Close()
		// A fresh echo ID per call: conntrack would otherwise treat the
		// echoes as one established flow, which policy changes never cut.
		id := int(pingID.Add(1)+uint32(os.Getpid())) & 0xffff
		deadline := time.Now().Add(timeout)
		for seq := 1; time.Now().Before(deadline); seq++ {
			msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("kdd-cni")}}
			b, _ := msg.Marshal(nil)
			if _, err := c.WriteTo(b, &net.IPAddr{IP: dst}); err != nil {
				return fmt.Errorf("failed to send echo to %s: %w", dst, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 1500)
			for {
				nr, peer, err := c.ReadFrom(buf)
				if err != nil {
					break // retry with the next sequence number
				}
				m, err := icmp.ParseMessage(proto, buf[:nr])
				if err != nil {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) &&
					e.ID == id && peer.(*net.IPAddr).IP.Equal(dst) {
					return nil
				}
			}
		}
		return fmt.Errorf("no echo reply from %s within %s", dst, timeout)
	})
}
