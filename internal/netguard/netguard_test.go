package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	g, err := New([]string{"10.9.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8:6379", true},
		{"[2001:4860:4860::8888]:6379", true},
		{"10.9.1.2:6379", true}, // allow-listed
		{"127.0.0.1:6379", false},
		{"127.9.9.9:6379", false},
		{"[::1]:6379", false},
		{"[::ffff:127.0.0.1]:6379", false},
		{"0.0.0.0:6379", false},
		{"[::]:6379", false},
		{"10.0.0.1:6379", false},
		{"172.16.3.4:6379", false},
		{"192.168.1.1:6379", false},
		{"169.254.169.254:80", false},
		{"[fe80::1]:80", false},
		{"[fc00::1]:80", false},
		{"100.64.1.1:80", false},
		{"224.0.0.1:80", false},
		{"255.255.255.255:80", false},
		{"198.18.0.1:80", false},
		{"[64:ff9b::7f00:1]:80", false},
	} {
		err := g.Check(netip.MustParseAddrPort(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v does not wrap ErrRefused", tc.addr, err)
		}
	}
}

// An allow-listed prefix does not let a denied server through, in any
// loopback spelling.
func TestDenyBeatsAllow(t *testing.T) {
	g, err := New([]string{"127.0.0.0/8", "::1/128"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Deny("localhost:7000"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"127.0.0.1:7000", "127.0.0.2:7000", "127.255.0.9:7000", "[::1]:7000", "0.0.0.0:7000", "[::ffff:127.0.0.1]:7000"} {
		if err := g.Check(netip.MustParseAddrPort(a)); err == nil {
			t.Errorf("%s: allowed, want refused", a)
		}
	}
	// A server bound to 0.0.0.0 answers on every address of the host.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
		if err := g.Check(netip.AddrPortFrom(ip.Unmap(), 7000)); err == nil {
			t.Errorf("this host's address %s on the denied port: allowed", ip)
		}
	}
	if err := g.Check(netip.MustParseAddrPort("127.0.0.1:7001")); err != nil {
		t.Errorf("another port: %v", err)
	}
}

// The dial-time check refuses a name that resolves to loopback, and lets
// an allow-listed listener through.
func TestDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	strict, _ := New(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if c, err := strict.Dialer(time.Second).DialContext(ctx, "tcp", net.JoinHostPort("localhost", port)); err == nil {
		c.Close()
		t.Fatal("dial of localhost: allowed")
	} else if !errors.Is(err, ErrRefused) {
		t.Fatalf("dial of localhost: %v, want ErrRefused", err)
	}
	open, _ := New([]string{"127.0.0.0/8"})
	c, err := open.Dialer(time.Second).DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("allow-listed dial: %v", err)
	}
	c.Close()
}

func TestNewBadPrefix(t *testing.T) {
	if _, err := New([]string{"not-a-cidr"}); err == nil {
		t.Fatal("no error")
	}
}
