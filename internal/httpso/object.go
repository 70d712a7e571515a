package httpso

import (
	"cmp"
	"slices"
	"time"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// Kind is the API kind an Object was read from.
type Kind uint8

const (
	// KindHTTPScaledObject is http.keda.sh/v1alpha1 HTTPScaledObject.
	KindHTTPScaledObject Kind = iota
	// KindInterceptorRoute is http.keda.sh/v1beta1 InterceptorRoute.
	KindInterceptorRoute
)

// String returns the kind's name, as in manifests.
func (k Kind) String() string {
	if k == KindInterceptorRoute {
		return v1beta1.Kind
	}
	return "HTTPScaledObject"
}

// Rule is one set of requests an object matches: a host of Hosts ("" is the catch-all), a path
// starting with a prefix of PathPrefixes, and every header of Headers. Both kinds are read into
// rules: an HTTPScaledObject has one, an InterceptorRoute one per entry of spec.rules.
type Rule struct {
	// Hosts as written, after Normalize; none means every host.
	Hosts []string
	// PathPrefixes as written, after Normalize; none means every path.
	PathPrefixes []string
	// Headers a request must all carry.
	Headers []v1alpha1.Header
}

// Object is an HTTPScaledObject or an InterceptorRoute as lobby routes it: the one model both
// kinds are read into, so that the routing table, conflicts, counts and the push stream treat
// them alike. Exactly one of HTTPScaledObject and InterceptorRoute is set; both have been through
// Normalize.
type Object struct {
	// Kind of the object.
	Kind Kind
	// Namespace and Name of the object.
	Namespace, Name string
	// Created is the object's creation time, which decides conflicts (oldest wins).
	Created time.Time
	// Rules of the requests the object routes to its target.
	Rules []Rule
	// AllowNamespaces are the other namespaces this object lets route requests for the hosts its
	// namespace owns (see AllowNamespacesAnnotation and NewOwnership).
	AllowNamespaces []string
	// StaticRules are the rules of each of an InterceptorRoute's static routes, in list order.
	// They claim nothing: they pick, among the requests the object's rules route to it, those
	// its static routes answer.
	StaticRules [][]Rule
	// HTTPScaledObject is the object when Kind is KindHTTPScaledObject.
	HTTPScaledObject *v1alpha1.HTTPScaledObject
	// InterceptorRoute is the object when Kind is KindInterceptorRoute.
	InterceptorRoute *v1beta1.InterceptorRoute
}

// Ref names an object of either kind.
type Ref struct {
	// Kind of the object.
	Kind Kind
	// Key is the object's "namespace/name".
	Key string
}

// String renders the reference for messages, such as "InterceptorRoute shop/cart".
func (r Ref) String() string { return r.Kind.String() + " " + r.Key }

// Key returns the "namespace/name" of the object. Objects of both kinds share one key space in
// counts and the push stream; two objects of different kinds with the same key are a conflict.
func (o *Object) Key() string { return o.Namespace + "/" + o.Name }

// Ref returns the object's kind and key.
func (o *Object) Ref() Ref { return Ref{Kind: o.Kind, Key: o.Key()} }

// FromHTTPScaledObject reads an HTTPScaledObject, already normalised, into an Object.
func FromHTTPScaledObject(h *v1alpha1.HTTPScaledObject) *Object {
	return &Object{
		Kind:      KindHTTPScaledObject,
		Namespace: h.Namespace,
		Name:      h.Name,
		Created:   h.CreationTimestamp.Time,
		Rules: []Rule{{
			Hosts:        h.Spec.Hosts,
			PathPrefixes: h.Spec.PathPrefixes,
			Headers:      h.Spec.Headers,
		}},
		AllowNamespaces:  ParseAllowNamespaces(h.Annotations[AllowNamespacesAnnotation]),
		HTTPScaledObject: h,
	}
}

// FromInterceptorRoute reads an InterceptorRoute, already normalised, into an Object. A route
// without rules is the catch-all, as an HTTPScaledObject without hosts and paths is.
func FromInterceptorRoute(r *v1beta1.InterceptorRoute) *Object {
	o := &Object{
		Kind:             KindInterceptorRoute,
		Namespace:        r.Namespace,
		Name:             r.Name,
		Created:          r.CreationTimestamp.Time,
		Rules:            rules(r.Spec.Rules),
		AllowNamespaces:  ParseAllowNamespaces(r.Annotations[AllowNamespacesAnnotation]),
		InterceptorRoute: r,
	}
	if len(o.Rules) == 0 {
		o.Rules = []Rule{{}}
	}
	for _, s := range r.Spec.StaticRoutes {
		o.StaticRules = append(o.StaticRules, rules(s.Rules))
	}
	return o
}

func rules(rs []v1beta1.RoutingRule) []Rule {
	out := make([]Rule, 0, len(rs))
	for _, r := range rs {
		rule := Rule{Hosts: r.Hosts}
		for _, p := range r.Paths {
			rule.PathPrefixes = append(rule.PathPrefixes, p.Value)
		}
		for _, h := range r.Headers {
			rule.Headers = append(rule.Headers, v1alpha1.Header{Name: h.Name, Value: h.Value})
		}
		out = append(out, rule)
	}
	return out
}

// Claims returns the distinct claims of one rule, in a stable order.
func (r Rule) Claims() []Claim {
	return claims(r.Hosts, r.PathPrefixes, HeaderKey(r.Headers))
}

// Claims returns the distinct claims of every rule of the object, in a stable order: everything
// the object takes from other objects. Static routes add none.
func (o *Object) Claims() []Claim {
	var out []Claim
	for _, r := range o.Rules {
		out = append(out, r.Claims()...)
	}
	sortClaims(out)
	return slices.Compact(out)
}

func sortClaims(cs []Claim) {
	slices.SortFunc(cs, func(a, b Claim) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.PathPrefix, b.PathPrefix), cmp.Compare(a.Headers, b.Headers))
	})
}

// OlderObject orders objects of either kind by precedence: the older creation time first, then
// the key, then HTTPScaledObjects before InterceptorRoutes, so the result is the same in every
// binary and on every replica.
func OlderObject(a, b *Object) int {
	return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Key(), b.Key()), cmp.Compare(a.Kind, b.Kind))
}

// ResolveObjects decides which objects, of both kinds, are routed (see Decide).
func ResolveObjects(objs []*Object) (accepted []*Object, conflicts map[Ref]Conflict) {
	accepted, conflicts, _ = Decide(objs)
	return accepted, conflicts
}

// Decide is the one rule every binary applies to decide which objects, of both kinds, are routed.
// Objects are taken oldest first (see OlderObject); one is not routed at all when an object of the
// other kind already has its key, when it claims a host another namespace owns without allowing
// its namespace (see NewOwnership), or when one of its claims collides with a claim of an object
// already accepted. Its conflict is returned under its Ref. The accepted objects are returned in
// precedence order, with the ownership of every claimed host, which also decides which routes
// may serve a request that the routes of its host do not match.
func Decide(objs []*Object) (accepted []*Object, conflicts map[Ref]Conflict, owners *Ownership) {
	owners = NewOwnership(objs)
	sorted := slices.Clone(objs)
	slices.SortFunc(sorted, OlderObject)
	owner := make(map[Claim]Ref, len(sorted))
	keys := make(map[string]Ref, len(sorted))
	conflicts = map[Ref]Conflict{}
	accepted = make([]*Object, 0, len(sorted))
	for _, o := range sorted {
		if w, ok := keys[o.Key()]; ok {
			conflicts[o.Ref()] = Conflict{Winner: w.Key, WinnerKind: w.Kind, SameName: true}
			continue
		}
		if c, own, refused := owners.Refusal(o); refused {
			conflicts[o.Ref()] = Conflict{Winner: own.First.Key, WinnerKind: own.First.Kind, Claim: c, Owner: own, Namespace: o.Namespace}
			continue
		}
		cs := o.Claims()
		lost := false
		for _, c := range cs {
			if w, ok := owner[c]; ok {
				conflicts[o.Ref()] = Conflict{Winner: w.Key, WinnerKind: w.Kind, Claim: c}
				lost = true
				break
			}
		}
		if lost {
			continue
		}
		for _, c := range cs {
			owner[c] = o.Ref()
		}
		keys[o.Key()] = o.Ref()
		accepted = append(accepted, o)
	}
	return accepted, conflicts, owners
}
