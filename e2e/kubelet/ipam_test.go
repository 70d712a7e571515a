package kubelet

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAllocator(t *testing.T) {
	t.Run("addresses start at the second /24 and freed ones are reused first", func(t *testing.T) {
		a, err := newAllocator(netip.MustParsePrefix("10.244.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		var got []netip.Addr
		for range 3 {
			ip, err := a.allocate()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ip)
		}
		want := []string{"10.244.1.1", "10.244.1.2", "10.244.1.3"}
		for i := range want {
			if got[i].String() != want[i] {
				t.Fatalf("allocations = %v, want %v", got, want)
			}
		}
		a.release(got[1])
		if ip, _ := a.allocate(); ip != got[1] {
			t.Errorf("after releasing %s the next address is %s, want it reused", got[1], ip)
		}
		if ip, _ := a.allocate(); ip.String() != "10.244.1.4" {
			t.Errorf("next address = %s, want 10.244.1.4", ip)
		}
	})

	t.Run("the reserved /24s and the .0 and .255 addresses are never handed out, and the pool ends", func(t *testing.T) {
		a, err := newAllocator(netip.MustParsePrefix("10.9.0.0/22"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			ip, err := a.allocate()
			if errors.Is(err, errPoolExhausted) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b := ip.As4()
			if b[2] != 1 && b[2] != 2 || b[3] == 0 || b[3] == 255 {
				t.Fatalf("handed out %s, which is reserved", ip)
			}
			n++
		}
		if n != 2*254 {
			t.Errorf("handed out %d addresses, want %d", n, 2*254)
		}
	})

	for _, tt := range []struct{ name, cidr string }{
		{"an IPv6 prefix is refused", "fd00::/64"},
		{"a prefix too small for the reserved /24s is refused", "10.244.0.0/23"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newAllocator(netip.MustParsePrefix(tt.cidr)); err == nil {
				t.Errorf("newAllocator(%s) succeeded", tt.cidr)
			}
		})
	}
	t.Run("a missing prefix is refused", func(t *testing.T) {
		if _, err := newAllocator(netip.Prefix{}); err == nil {
			t.Error("newAllocator of the zero prefix succeeded")
		}
	})
}
