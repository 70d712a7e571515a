// Package endpointslices feeds the endpoints.Targets of an interceptor from the API server: the
// Store turns Services and EndpointSlices into each target's ready addresses and protocol, and
// the Informer watches them. The Store keeps only the Services that some Target refers to:
// objects of other Services are dropped as they arrive, so unrelated EndpointSlices cost a label
// lookup and nothing more.
package endpointslices

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/lobby-http/lobby/interceptor/internal/endpoints"
)

// Store owns the Targets of one interceptor. It is fed Services and EndpointSlices (by the
// Informer, or directly in tests) and keeps only those of the Services some Target refers to.
type Store struct {
	log logr.Logger

	mu       sync.Mutex
	services map[serviceKey]*service
	// pending holds the Services that became wanted after their objects may have been dropped; the
	// Informer fetches them. kick tells it there is work.
	pending map[serviceKey]struct{}
	kick    chan struct{}
	// fetches is set once an Informer feeds the Store; without one (in tests) nothing is fetched.
	fetches bool
}

// NewStore returns an empty Store.
func NewStore(log logr.Logger) *Store {
	return &Store{
		log:      log,
		services: map[serviceKey]*service{},
		pending:  map[serviceKey]struct{}{},
		kick:     make(chan struct{}, 1),
	}
}

type serviceKey struct{ namespace, name string }

type targetKey struct {
	port     int32
	portName string
}

// service is what the Store knows about one wanted Service.
type service struct {
	key     serviceKey
	targets map[targetKey]*endpoints.Target

	// seen is false until the Service object has been seen; until then its targets are empty.
	seen  bool
	rv    string
	ports []corev1.ServicePort

	slices map[string]*slice

	// fetching is true while the Informer fetches this Service's objects; deletions seen meanwhile
	// are remembered so that an older fetch result does not bring them back.
	fetching   bool
	sliceTombs map[string]string
	svcTomb    string
	// listedServices and listedSlices record a full relist since the Service became wanted, which
	// makes a fetch unnecessary.
	listedServices, listedSlices bool
}

// slice is the part of an EndpointSlice that snapshots are built from.
type slice struct {
	rv    string
	ports []slicePort
	ready []netip.Addr
}

type slicePort struct {
	name string
	port int32
}

// Target returns the stable handle for a port of a Service, selected by number (port > 0) or by
// name. The store keeps EndpointSlices only for Services that some handle refers to.
func (s *Store) Target(namespace, name string, port int32, portName string) *endpoints.Target {
	if port > 0 {
		portName = ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := serviceKey{namespace, name}
	svc := s.services[k]
	if svc == nil {
		svc = &service{key: k, targets: map[targetKey]*endpoints.Target{}, slices: map[string]*slice{}}
		s.services[k] = svc
		if s.fetches {
			// Objects of this Service were dropped while nobody wanted it: have them fetched.
			s.pending[k] = struct{}{}
			svc.fetching = true
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	tk := targetKey{port, portName}
	if t := svc.targets[tk]; t != nil {
		return t
	}
	t := endpoints.NewTarget(namespace, name, port, portName)
	svc.targets[tk] = t
	svc.publishTo(tk, t)
	return t
}

// Retain releases every Target not in keep and forgets the Services no kept Target refers to.
// The routing watcher calls it after each table swap with the targets of the new table. A released
// Target keeps its last snapshot but is no longer updated.
func (s *Store) Retain(keep []*endpoints.Target) {
	want := make(map[*endpoints.Target]struct{}, len(keep))
	for _, t := range keep {
		want[t] = struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, svc := range s.services {
		maps.DeleteFunc(svc.targets, func(_ targetKey, t *endpoints.Target) bool {
			_, ok := want[t]
			return !ok
		})
		if len(svc.targets) == 0 {
			delete(s.services, k)
			delete(s.pending, k)
		}
	}
}

// Len returns the number of Services the Store keeps.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.services)
}

// UpdateService records an added or changed Service. Services no Target refers to are ignored.
func (s *Store) UpdateService(o *corev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[serviceKey{o.Namespace, o.Name}]
	if svc == nil {
		return
	}
	svc.applyService(o, "")
}

// DeleteService records that a Service is gone; its targets become empty.
func (s *Store) DeleteService(namespace, name string) {
	s.deleteService(namespace, name, "")
}

func (s *Store) deleteService(namespace, name, rv string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[serviceKey{namespace, name}]
	if svc == nil || !svc.seen {
		return
	}
	svc.forgetService(rv)
	svc.publish()
}

// UpdateSlice records an added or changed EndpointSlice. Slices of Services no Target refers to
// are dropped without being stored.
func (s *Store) UpdateSlice(o *discoveryv1.EndpointSlice) {
	s.changeSlice(o, func(svc *service) bool {
		// A fetch may have stored a newer version than a watch event that was still on its way.
		if cur := svc.slices[o.Name]; cur != nil && compareRV(o.ResourceVersion, cur.rv) < 0 {
			return false
		}
		svc.slices[o.Name] = compact(o)
		return true
	})
}

// DeleteSlice records that an EndpointSlice is gone.
func (s *Store) DeleteSlice(o *discoveryv1.EndpointSlice) {
	s.changeSlice(o, func(svc *service) bool {
		svc.deleteSlice(o.Name, o.ResourceVersion)
		return true
	})
}

// changeSlice calls change, under the lock, with the Service the EndpointSlice o belongs to, and
// publishes the Service's endpoints when change reports a change. Slices of Services no Target
// refers to are ignored.
func (s *Store) changeSlice(o *discoveryv1.EndpointSlice, change func(*service) bool) {
	name := o.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[serviceKey{o.Namespace, name}]
	if svc == nil || !change(svc) {
		return
	}
	svc.publish()
}

func (svc *service) deleteSlice(name, rv string) {
	delete(svc.slices, name)
	if svc.fetching {
		if svc.sliceTombs == nil {
			svc.sliceTombs = map[string]string{}
		}
		svc.sliceTombs[name] = maxRV(svc.sliceTombs[name], rv)
	}
}

// compact keeps what snapshots need of an EndpointSlice: its ports and its ready addresses.
func compact(o *discoveryv1.EndpointSlice) *slice {
	sl := &slice{rv: o.ResourceVersion}
	if o.AddressType == discoveryv1.AddressTypeFQDN {
		return sl
	}
	for _, p := range o.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		n := ""
		if p.Name != nil {
			n = *p.Name
		}
		sl.ports = append(sl.ports, slicePort{name: n, port: *p.Port})
	}
	for _, e := range o.Endpoints {
		if !ready(e.Conditions) {
			continue
		}
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				sl.ready = append(sl.ready, ip.Unmap())
			}
		}
	}
	return sl
}

// ready reports whether an endpoint may receive new requests: ready true or unset (an unknown
// state is to be treated as ready, as the EndpointSlice API says), and not terminating.
func ready(c discoveryv1.EndpointConditions) bool {
	if c.Ready != nil && !*c.Ready {
		return false
	}
	return c.Terminating == nil || !*c.Terminating
}

// publish publishes the ready addresses of all the Service's targets.
func (svc *service) publish() {
	for tk, t := range svc.targets {
		svc.publishTo(tk, t)
	}
}

// publishTo publishes to t, the target of tk, its ready addresses and protocol as known of its
// Service. It resolves the Service port (by number or name), then the EndpointSlice port of the
// same name, whose number is the container port. A Service not seen yet, or without the port,
// has no ready address.
func (svc *service) publishTo(tk targetKey, t *endpoints.Target) {
	if !svc.seen {
		t.Publish(endpoints.HTTP1, nil)
		return
	}
	i := slices.IndexFunc(svc.ports, func(p corev1.ServicePort) bool {
		if tk.port > 0 {
			return p.Port == tk.port
		}
		return p.Name == tk.portName
	})
	if i < 0 {
		t.Publish(endpoints.HTTP1, nil)
		return
	}
	sp := svc.ports[i]
	var addrs []netip.AddrPort
	for _, sl := range svc.slices {
		j := slices.IndexFunc(sl.ports, func(p slicePort) bool { return p.name == sp.Name })
		if j < 0 {
			continue
		}
		port := uint16(sl.ports[j].port)
		for _, ip := range sl.ready {
			addrs = append(addrs, netip.AddrPortFrom(ip, port))
		}
	}
	t.Publish(protocol(sp), addrs)
}

// protocol resolves how to speak to a Service port: its appProtocol when set, else its name.
func protocol(p corev1.ServicePort) endpoints.Protocol {
	if p.AppProtocol != nil && *p.AppProtocol != "" {
		switch strings.ToLower(*p.AppProtocol) {
		case "kubernetes.io/h2c", "h2c", "grpc":
			return endpoints.H2C
		case "https", "kubernetes.io/https", "kubernetes.io/wss", "tls", "kubernetes.io/tls":
			return endpoints.HTTPS
		default:
			return endpoints.HTTP1
		}
	}
	n := strings.ToLower(p.Name)
	switch {
	case n == "h2c" || n == "grpc" || strings.HasPrefix(n, "grpc-") || strings.HasPrefix(n, "h2c-"):
		return endpoints.H2C
	case n == "https" || strings.HasPrefix(n, "https-"):
		return endpoints.HTTPS
	default:
		return endpoints.HTTP1
	}
}

// compareRV compares two resource versions, which the API server makes comparable within one
// resource. Versions that cannot be compared (such as the empty ones of objects built in tests)
// compare equal, so that callers let the incoming object win.
func compareRV(a, b string) int {
	c, err := resourceversion.CompareResourceVersion(a, b)
	if err != nil {
		return 0
	}
	return c
}

// applyService reconciles the Service with o, or with its absence when o is nil, as known at
// listRV (empty for a single event). Older information than what is held is ignored.
func (svc *service) applyService(o *corev1.Service, listRV string) {
	if o == nil {
		if svc.seen && compareRV(svc.rv, listRV) <= 0 {
			svc.forgetService(listRV)
			svc.publish()
		}
		return
	}
	if svc.seen && compareRV(o.ResourceVersion, svc.rv) < 0 {
		return
	}
	if !svc.seen && svc.svcTomb != "" && compareRV(o.ResourceVersion, svc.svcTomb) < 0 {
		return
	}
	svc.seen = true
	svc.rv = o.ResourceVersion
	svc.ports = slices.Clone(o.Spec.Ports)
	svc.publish()
}

func (svc *service) forgetService(rv string) {
	if svc.fetching {
		svc.svcTomb = maxRV(svc.svcTomb, rv)
	}
	svc.seen, svc.rv, svc.ports = false, "", nil
}

// applySlices reconciles the Service's slices with the complete set items, listed at listRV:
// slices missing from it are deleted unless a newer version is held, and listed slices replace
// older versions unless they were deleted since.
func (svc *service) applySlices(items map[string]*slice, listRV string) {
	for name, cur := range svc.slices {
		if _, ok := items[name]; !ok && compareRV(cur.rv, listRV) <= 0 {
			svc.deleteSlice(name, listRV)
		}
	}
	for name, sl := range items {
		if cur := svc.slices[name]; cur != nil && compareRV(sl.rv, cur.rv) < 0 {
			continue
		}
		if tomb, ok := svc.sliceTombs[name]; ok && compareRV(sl.rv, tomb) < 0 {
			continue
		}
		svc.slices[name] = sl
	}
	svc.publish()
}

// settle ends the fetching state once the Service's objects are known from a list.
func (s *Store) settle(svc *service) {
	svc.fetching = false
	svc.sliceTombs = nil
	svc.svcTomb = ""
	delete(s.pending, svc.key)
}

// maxRV returns the newer of two resource versions, preferring a well-formed one.
func maxRV(a, b string) string {
	if a == "" {
		return b
	}
	if c, err := resourceversion.CompareResourceVersion(a, b); err == nil && c < 0 {
		return b
	}
	return a
}
