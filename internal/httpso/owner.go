package httpso

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// AllowNamespacesAnnotation, on an HTTPScaledObject or InterceptorRoute, lists the other
// namespaces (comma-separated, or "*" for all) that may route requests for the hosts its namespace
// owns and the object claims, or whose claims are covered by a wildcard the object claims. It has
// effect only on objects of the owning namespace.
const AllowNamespacesAnnotation = "lobby.dev/allow-namespaces"

// ParseAllowNamespaces reads the value of AllowNamespacesAnnotation: namespace names separated by
// commas, spaces ignored, "*" for every namespace. Empty entries are skipped, and so are entries
// that cannot be namespace names (see InvalidAllowNamespaces).
func ParseAllowNamespaces(v string) []string {
	if v == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && (p == "*" || len(validation.IsDNS1123Label(p)) == 0) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// InvalidAllowNamespaces returns the entries of an AllowNamespacesAnnotation value that are
// neither "*" nor a valid namespace name, which ParseAllowNamespaces ignores.
func InvalidAllowNamespaces(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && p != "*" && len(validation.IsDNS1123Label(p)) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// AllowNote says, for the Ready message of an object with the given annotations, which entries
// of its AllowNamespacesAnnotation are ignored and why; "" when none is.
func AllowNote(annotations map[string]string) string {
	bad := InvalidAllowNamespaces(annotations[AllowNamespacesAnnotation])
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("; annotation %s: %q ignored: not namespace names (write names separated by commas, or *)",
		AllowNamespacesAnnotation, bad)
}

// Owner is the namespace that owns a host: the namespace of the oldest object (see OlderObject)
// whose claims cover it, and the other namespaces it lets route requests for it.
type Owner struct {
	// Namespace owns the host.
	Namespace string
	// First is the oldest object claiming the host (or a wildcard covering it), in Namespace.
	First Ref
	// FirstHost is the host, as claimed by First: the host itself or a wildcard covering it.
	FirstHost string
	// Allowed are the other namespaces the owner allows, sorted; "*" allows every namespace.
	Allowed []string
}

// Allows reports whether objects of namespace ns may route requests for the owned host.
func (o *Owner) Allows(ns string) bool {
	return o == nil || ns == o.Namespace || slices.Contains(o.Allowed, "*") || slices.Contains(o.Allowed, ns)
}

// key identifies the owner and its allowed namespaces, for sharing work between hosts of one
// owner.
func (o *Owner) key() string {
	return o.Namespace + "|" + strings.Join(o.Allowed, ",")
}

// Ownership maps every host key that some object claims ("" is the catch-all, "*.example.com" a
// wildcard) to its Owner. It is computed from all objects, routed or not, so that it is the same in
// every binary.
type Ownership struct {
	owners map[string]*Owner
}

// Of returns the owner of a host key as claims spell it (see NormalizeHost), or nil when no object
// claims that key.
func (w *Ownership) Of(host string) *Owner {
	if w == nil {
		return nil
	}
	return w.owners[host]
}

// Hosts returns every owned host key, sorted.
func (w *Ownership) Hosts() []string {
	if w == nil {
		return nil
	}
	out := make([]string, 0, len(w.owners))
	for h := range w.owners {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// Covering returns the wildcard host keys that match every host host matches, most specific
// first: "*.b.example.com" and "*.example.com" for "a.b.example.com" or "*.b.example.com" (then
// "*.com"). The catch-all "" covers every host and is not listed; it has none.
func Covering(host string) []string {
	if host == "" {
		return nil
	}
	s := strings.TrimPrefix(host, "*.")
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] == '.' && i+1 < len(s) {
			out = append(out, "*."+s[i+1:])
		}
	}
	return out
}

// Covers reports whether the host key pattern matches every request host matches, without being
// host itself: the catch-all covers every other key, "*.example.com" covers "a.example.com" and
// "*.b.example.com".
func Covers(pattern, host string) bool {
	if pattern == host {
		return false
	}
	if pattern == "" {
		return true
	}
	return strings.HasPrefix(pattern, "*.") && strings.HasSuffix(host, pattern[1:])
}

// NewOwnership computes the owner of every host key claimed by objs. A host key is owned by the
// namespace of the oldest object that claims it or a wildcard covering it; the catch-all owns only
// itself. The owner allows the namespaces named by AllowNamespacesAnnotation on its objects that
// claim the key or a wildcard covering it.
func NewOwnership(objs []*Object) *Ownership {
	sorted := slices.Clone(objs)
	slices.SortFunc(sorted, OlderObject)
	// claimants lists, per host key, the objects claiming it, oldest first.
	claimants := map[string][]*Object{}
	for _, o := range sorted {
		for _, h := range o.Hosts() {
			claimants[h] = append(claimants[h], o)
		}
	}
	w := &Ownership{owners: make(map[string]*Owner, len(claimants))}
	for h, cs := range claimants {
		first, firstHost := cs[0], h
		for _, c := range Covering(h) {
			if x := claimants[c]; len(x) > 0 && OlderObject(x[0], first) < 0 {
				first, firstHost = x[0], c
			}
		}
		own := &Owner{Namespace: first.Namespace, First: first.Ref(), FirstHost: firstHost}
		for _, k := range append([]string{h}, Covering(h)...) {
			for _, o := range claimants[k] {
				if o.Namespace == own.Namespace {
					own.Allowed = append(own.Allowed, o.AllowNamespaces...)
				}
			}
		}
		slices.Sort(own.Allowed)
		own.Allowed = slices.Compact(own.Allowed)
		w.owners[h] = own
	}
	return w
}

// Refusal returns the first claim of o on a host key owned by a namespace that does not allow o's
// namespace, and that owner; ok is false when o may claim all its hosts.
func (w *Ownership) Refusal(o *Object) (c Claim, owner *Owner, ok bool) {
	for _, c := range o.Claims() {
		if own := w.Of(c.Host); !own.Allows(o.Namespace) {
			return c, own, true
		}
	}
	return Claim{}, nil, false
}

// Shadow is a host key that a wildcard or catch-all claim of an object covers but does not serve:
// requests for it are decided among the routes of its owner and the namespaces the owner allows.
type Shadow struct {
	// Host is the covered host key.
	Host string
	// Owner owns Host.
	Owner *Owner
}

// Shadows lists, sorted by host, the host keys that o's wildcard and catch-all claims cover and
// that another namespace owns without allowing o's namespace.
func (w *Ownership) Shadows(o *Object) []Shadow {
	if w == nil {
		return nil
	}
	var patterns []string
	for _, h := range o.Hosts() {
		if h == "" || strings.HasPrefix(h, "*.") {
			patterns = append(patterns, h)
		}
	}
	if len(patterns) == 0 {
		return nil
	}
	var out []Shadow
	for _, h := range w.Hosts() {
		own := w.owners[h]
		if own.Allows(o.Namespace) {
			continue
		}
		if slices.ContainsFunc(patterns, func(p string) bool { return Covers(p, h) }) {
			out = append(out, Shadow{Host: h, Owner: own})
		}
	}
	return out
}

// ShadowMessage says, for the status of o, which covered hosts it does not serve and why; "" when
// there are none. At most a few hosts are named.
func ShadowMessage(o *Object, shadows []Shadow) string {
	if len(shadows) == 0 {
		return ""
	}
	const named = 3
	parts := make([]string, 0, named)
	for i, s := range shadows {
		if i == named {
			break
		}
		parts = append(parts, fmt.Sprintf("%q (owned by namespace %q)", displayHost(s.Host), s.Owner.Namespace))
	}
	more := ""
	if len(shadows) > named {
		more = fmt.Sprintf(" and %d more", len(shadows)-named)
	}
	return fmt.Sprintf("requests for host %s%s are not served by this object's wildcard or catch-all hosts: "+
		"another namespace owns them; to be served them, the owner adds %q to the %s annotation of its object claiming the host",
		strings.Join(parts, ", "), more, o.Namespace, AllowNamespacesAnnotation)
}

func displayHost(h string) string {
	if h == "" {
		return "*"
	}
	return h
}

// Hosts returns the distinct host keys the object claims, sorted ("" is the catch-all).
func (o *Object) Hosts() []string {
	var out []string
	for _, c := range o.Claims() {
		out = append(out, c.Host)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
