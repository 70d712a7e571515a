package kubelet

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// errPoolExhausted is returned by allocator.allocate when every pod address is in use.
var errPoolExhausted = errors.New("no free pod address left")

// allocator hands out pod addresses from a pod CIDR. The first and the last /24 of the CIDR
// are reserved for the control plane and lobby's own processes, and so are the network (.0) and
// broadcast (.255) addresses of every /24, so that no pod ever looks like one of them. It always
// hands out the lowest free address, so a freed address is reused first.
type allocator struct {
	first, last netip.Addr // first and last address that may be handed out

	mu    sync.Mutex
	inUse map[netip.Addr]bool
}

// newAllocator returns an allocator for cidr, which must be an IPv4 prefix of at most /22 (so
// that something is left between the two reserved /24s).
func newAllocator(cidr netip.Prefix) (*allocator, error) {
	if !cidr.IsValid() || !cidr.Addr().Is4() {
		return nil, fmt.Errorf("PodCIDR %q: want an IPv4 prefix such as 10.244.0.0/16", cidr)
	}
	if cidr.Bits() > 22 {
		return nil, fmt.Errorf("PodCIDR %s: want a prefix of at most /22; its first and last /24 are reserved", cidr)
	}
	cidr = cidr.Masked()
	base := cidr.Addr().As4()
	size := uint32(1) << (32 - cidr.Bits())
	start := be32(base)
	return &allocator{
		first: addr4(start + 256 + 1),
		last:  addr4(start + size - 256 - 2),
		inUse: make(map[netip.Addr]bool),
	}, nil
}

// allocate returns the lowest free address and marks it in use.
func (a *allocator) allocate() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip := a.first; ip.Compare(a.last) <= 0; ip = ip.Next() {
		if b := ip.As4(); b[3] == 0 || b[3] == 255 {
			continue
		}
		if !a.inUse[ip] {
			a.inUse[ip] = true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate pod address between %s and %s: %w", a.first, a.last, errPoolExhausted)
}

// release marks ip free again; releasing a free address does nothing.
func (a *allocator) release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inUse, ip)
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
