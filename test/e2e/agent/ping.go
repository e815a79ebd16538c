package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// dfPing sends ICMP echoes to addr whose IPv4 packets are size bytes long,
// with don't-fragment set (IP_PMTUDISC_DO, as `ping -M do`), and waits for
// a reply: it proves a path carries packets of that size whole. A packet
// larger than this pod's MTU fails at once ("message too long"); one larger
// than a hop's MTU gets "fragmentation needed" back, or nothing.
func dfPing(addr string, size int, timeout time.Duration) error {
	dst := net.ParseIP(addr).To4()
	if dst == nil || size < 28 || size > 65535 {
		return fmt.Errorf("want an IPv4 address and a size from 28 to 65535, got %q and %d", addr, size)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("failed to open a raw ICMP socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO); err != nil {
		return fmt.Errorf("failed to set don't-fragment: %w", err)
	}
	tv := syscall.NsecToTimeval(int64(300 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("failed to set a receive timeout: %w", err)
	}
	id := os.Getpid() & 0xffff
	to := &syscall.SockaddrInet4{Addr: [4]byte(dst)}
	buf := make([]byte, 65536)
	last := errors.New("no reply")
	deadline := time.Now().Add(timeout)
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: make([]byte, size-28)}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if err := syscall.Sendto(fd, b, 0, to); err != nil {
			if seq > 1 { // the kernel learnt the path's MTU from the first: say how
				err = fmt.Errorf("%w, after %w", err, last)
			}
			return fmt.Errorf("failed to send a %d-byte packet with don't-fragment to %s: %w", size, addr, err)
		}
		for wait := time.Now().Add(time.Second); time.Now().Before(wait); {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the receive timeout: send again when the second is up
			}
			ok, why := echoReply(buf[:n], id, seq)
			if ok {
				return nil
			}
			if why != "" {
				last = errors.New(why)
			}
		}
	}
	return fmt.Errorf("%d-byte packet with don't-fragment to %s: %w", size, addr, last)
}

// echoReply reads one received IPv4 packet: our echo's reply, or why it
// will not come (a "fragmentation needed" naming the hop's MTU).
func echoReply(p []byte, id, seq int) (bool, string) {
	if len(p) < 20 {
		return false, ""
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+8 {
		return false, ""
	}
	m, err := icmp.ParseMessage(1, p[ihl:])
	if err != nil {
		return false, ""
	}
	switch body := m.Body.(type) {
	case *icmp.Echo:
		return m.Type == ipv4.ICMPTypeEchoReply && body.ID == id && body.Seq == seq, ""
	case *icmp.DstUnreach:
		if m.Code == 4 { // fragmentation needed and DF set
			return false, fmt.Sprintf("fragmentation needed: next-hop MTU %d", binary.BigEndian.Uint16(p[ihl+6:ihl+8]))
		}
		return false, fmt.Sprintf("destination unreachable (code %d)", m.Code)
	}
	return false, ""
}
