// Package netguard keeps tenant-supplied addresses (an import's source, an
// alert's webhook) away from the operator's own network: a Guard refuses,
// at dial time, every address that is not public unicast, unless an
// operator allow-listed its prefix. The check runs on the address the
// socket actually connects to (net.Dialer.Control), after DNS, so a name
// that resolves to 127.0.0.1 or is re-pointed between a check and the dial
// is refused too. Addresses the guard must never let through whatever the
// allow-list says (Granary's own servers) are given with Deny.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal; its text says which address
// class was refused but not what, if anything, listens there.
var ErrRefused = errors.New("address not allowed")

// Guard decides which addresses may be dialled.
type Guard struct {
	allow []netip.Prefix

	mu   sync.RWMutex
	deny map[netip.AddrPort]struct{}
	// localPorts are denied ports of servers on this host: such a server
	// may listen on every address of the host (0.0.0.0), so the port is
	// refused on every loopback address and every address of this host's
	// interfaces, not only on the spelling given.
	localPorts map[uint16]struct{}
}

// New builds a guard that lets through public unicast addresses and those
// in the allow prefixes (CIDR strings such as "127.0.0.1/32"), which an
// operator sets for a private network it trusts (and tests set for
// loopback).
func New(allow []string) (*Guard, error) {
	g := &Guard{deny: map[netip.AddrPort]struct{}{}, localPorts: map[uint16]struct{}{}}
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("netguard: allow %q: %w", a, err)
		}
		g.allow = append(g.allow, p.Masked())
	}
	return g, nil
}

// Deny refuses the exact address host:port (an IP literal) whatever the
// allow-list says: a tenant must never name one of Granary's own servers.
// Names that are not IP literals are resolved once, now.
func (g *Guard) Deny(addrs ...string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("netguard: deny %q: %w", a, err)
		}
		ips, err := net.LookupHost(host)
		if err != nil {
			return fmt.Errorf("netguard: deny %q: %w", a, err)
		}
		for _, ip := range ips {
			ap, err := netip.ParseAddrPort(net.JoinHostPort(ip, port))
			if err != nil {
				return fmt.Errorf("netguard: deny %q: %w", a, err)
			}
			ip := ap.Addr().Unmap()
			g.deny[netip.AddrPortFrom(ip, ap.Port())] = struct{}{}
			if isLocal(ip) {
				g.localPorts[ap.Port()] = struct{}{}
			}
		}
	}
	return nil
}

// Check reports whether ap may be dialled.
func (g *Guard) Check(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	g.mu.RLock()
	_, denied := g.deny[netip.AddrPortFrom(ip, ap.Port())]
	_, localPort := g.localPorts[ap.Port()]
	g.mu.RUnlock()
	if denied || (localPort && isLocal(ip)) {
		return fmt.Errorf("%w: it is one of this cluster's own servers", ErrRefused)
	}
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	if class := classOf(ip); class != "" {
		return fmt.Errorf("%w: %s addresses are refused", ErrRefused, class)
	}
	return nil
}

// special lists the non-public ranges not covered by netip's predicates.
var special = []struct {
	p     netip.Prefix
	class string
}{
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64"},
	{netip.MustParsePrefix("2002::/16"), "6to4"},
}

// classOf names the class of a non-public address, "" for public unicast.
func classOf(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	case ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	for _, s := range special {
		if s.p.Contains(ip) {
			return s.class
		}
	}
	return ""
}

// isLocal reports whether ip reaches this host: loopback, unspecified, or
// an address of one of its interfaces.
func isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if own, ok := netip.AddrFromSlice(n.IP); ok && own.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// Control is a net.Dialer.Control that refuses what Check refuses; it sees
// the resolved address of every connection attempt.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return g.Check(ap)
}

// Dialer is a net.Dialer with the guard's Control and the given timeout.
func (g *Guard) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: g.Control}
}
