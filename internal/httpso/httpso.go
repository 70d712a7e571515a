// Package httpso holds what lobby's binaries share about HTTPScaledObjects and InterceptorRoutes:
// typed informers, the one normalising function, the one route model both kinds are read into
// (Object), and the rules that decide which object owns a host, path and header combination when
// two claim the same one.
package httpso

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// NewClient returns a REST client for the http.keda.sh/v1alpha1 API group.
func NewClient(cfg *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register HTTPScaledObject types: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("create HTTPScaledObject client: %w", err)
	}
	return client, nil
}

// NewInformer returns an informer of the HTTPScaledObjects in namespace (all namespaces when
// empty). Its objects are *v1alpha1.HTTPScaledObject, reduced by Trim before they are cached.
func NewInformer(client rest.Interface, namespace string, resync time.Duration) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client, v1alpha1.Resource, namespace, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &v1alpha1.HTTPScaledObject{}, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	// SetTransform fails only once the informer has started; this one has not.
	_ = inf.SetTransform(Trim)
	return inf
}

// Trim is the informers' transform: it drops what no lobby binary reads from a cached
// HTTPScaledObject or InterceptorRoute (managed fields, annotations such as kubectl's
// last-applied copy of the whole object, labels and status), keeping the name, namespace, UID,
// resource version, generation, creation time, the spec, which it normalises (see Normalize),
// and the annotations routing reads (v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation and
// AllowNamespacesAnnotation).
// Other objects pass unchanged.
func Trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1alpha1.HTTPScaledObject:
		o.ManagedFields, o.Annotations, o.Labels = nil, routingAnnotations(o.Annotations), nil
		o.Status = v1alpha1.HTTPScaledObjectStatus{}
		Normalize(&o.Spec)
	case *v1beta1.InterceptorRoute:
		o.ManagedFields, o.Annotations, o.Labels = nil, routingAnnotations(o.Annotations), nil
		o.Status = v1beta1.InterceptorRouteStatus{}
		Normalize(&o.Spec)
	}
	return obj, nil
}

// routingAnnotations returns the annotations of annotations that routing reads, or nil.
func routingAnnotations(annotations map[string]string) map[string]string {
	var out map[string]string
	for _, k := range []string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation, AllowNamespacesAnnotation} {
		if v, ok := annotations[k]; ok {
			if out == nil {
				out = make(map[string]string, 2)
			}
			out[k] = v
		}
	}
	return out
}

// Key returns the "namespace/name" key lobby uses for an object everywhere: routes, counts, the
// push stream and metrics labels.
func Key(o *v1alpha1.HTTPScaledObject) string {
	return o.Namespace + "/" + o.Name
}

// Claim is one host, path prefix and header set that an object routes, normalised so that two
// claims are equal exactly when they match the same requests.
type Claim struct {
	// Host is lower case without a trailing dot; "" is the catch-all, "*.example.com" a wildcard.
	Host string
	// PathPrefix starts with "/" and has no trailing "/" (except the root itself).
	PathPrefix string
	// Headers is the header set as sorted "name=value" or "name" entries joined by ",", with
	// names lower case.
	Headers string
}

// String renders the claim for messages, such as `host "a.example.com", path "/api"`.
func (c Claim) String() string {
	host := c.Host
	if host == "" {
		host = "*"
	}
	s := fmt.Sprintf("host %q, path %q", host, c.PathPrefix)
	if c.Headers != "" {
		s += fmt.Sprintf(", headers %q", c.Headers)
	}
	return s
}

// NormalizeHost returns the host as routes are keyed: without a port, IPv6 brackets or a
// trailing dot, lower case; "*" becomes "", the catch-all.
func NormalizeHost(h string) string {
	h = hostWithoutPort(h)
	if h == "*" {
		return "" // The add-on's spelling of the catch-all.
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1] // The interceptor strips them from the Host header too.
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// NormalizePathPrefix maps "", "/", "/a/" and "a" forms to the canonical prefix ("/", "/a"). A
// prefix without a leading slash is read as if it had one, as the KEDA HTTP Add-on does; dot
// segments and doubled slashes are resolved, since requests are matched on their cleaned path.
func NormalizePathPrefix(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p)
}

// HeaderKey renders a header set canonically (see Claim.Headers).
func HeaderKey(headers []v1alpha1.Header) string {
	if len(headers) == 0 {
		return ""
	}
	parts := make([]string, 0, len(headers))
	for _, h := range headers {
		p := strings.ToLower(h.Name)
		if h.Value != nil {
			p += "=" + *h.Value
		}
		parts = append(parts, p)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// Claims returns the distinct claims of a spec, in a stable order.
func Claims(spec *v1alpha1.HTTPScaledObjectSpec) []Claim {
	return claims(spec.Hosts, spec.PathPrefixes, HeaderKey(spec.Headers))
}

// claims returns the distinct claims of hosts × paths with one header set, in a stable order.
func claims(hosts, paths []string, headers string) []Claim {
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	out := make([]Claim, 0, len(hosts)*len(paths))
	for _, h := range hosts {
		for _, p := range paths {
			out = append(out, Claim{Host: NormalizeHost(h), PathPrefix: NormalizePathPrefix(p), Headers: headers})
		}
	}
	sortClaims(out)
	return slices.Compact(out)
}

// Conflict records that an object is not routed because an older one, of either kind, already
// claims some of what it claims, or already has its namespace and name.
type Conflict struct {
	// Winner is the key of the object that keeps the claim.
	Winner string
	// WinnerKind is the kind of the object that keeps the claim.
	WinnerKind Kind
	// Claim is the first contested claim; zero when SameName is set.
	Claim Claim
	// Owner is set when the object is refused because another namespace owns the host of Claim
	// and does not allow the object's namespace (Namespace); Winner is then the owner's oldest
	// claimant.
	Owner *Owner
	// Namespace is the namespace of the refused object, set with Owner.
	Namespace string
	// SameName is set when the winner is an object of the other kind with the same namespace and
	// name: both would share one set of counts, so only the older is routed.
	SameName bool
}

// Message says, for the status of the losing object, why it is not routed and what to do.
func (c Conflict) Message() string {
	w := Ref{Kind: c.WinnerKind, Key: c.Winner}
	if c.Owner != nil {
		host := c.Claim.Host
		if host == "" {
			host = "*"
		}
		via := ""
		if c.Owner.FirstHost != c.Claim.Host {
			via = fmt.Sprintf(" through the wildcard %q", c.Owner.FirstHost)
		}
		return fmt.Sprintf("host %q is owned by namespace %q (%s claimed it first%s), so this object is not routed: "+
			"ask the owner to add namespace %q to the %s annotation of %s, or use another host",
			host, c.Owner.Namespace, w, via, c.Namespace, AllowNamespacesAnnotation, w)
	}
	if c.SameName {
		return fmt.Sprintf("the older %s has the same namespace and name, so this object is not routed: rename one of them, or delete %s", w, w)
	}
	return fmt.Sprintf("%s is already routed by the older %s, so this object is not routed: "+
		"change its hosts, paths or headers, or delete %s", c.Claim, w, w)
}

// Older orders objects by precedence: the older creation time first, then the namespace/name key,
// so the result is the same in every binary and on every replica.
func Older(a, b *v1alpha1.HTTPScaledObject) int {
	return OlderObject(FromHTTPScaledObject(a), FromHTTPScaledObject(b))
}

// Resolve decides which HTTPScaledObjects are routed when only they compete (see ResolveObjects),
// returning conflicts keyed by the losing object's key.
func Resolve(objs []*v1alpha1.HTTPScaledObject) (accepted []*v1alpha1.HTTPScaledObject, conflicts map[string]Conflict) {
	in := make([]*Object, len(objs))
	for i, o := range objs {
		in[i] = FromHTTPScaledObject(o)
	}
	acc, cs := ResolveObjects(in)
	accepted = make([]*v1alpha1.HTTPScaledObject, len(acc))
	for i, o := range acc {
		accepted[i] = o.HTTPScaledObject
	}
	conflicts = make(map[string]Conflict, len(cs))
	for ref, c := range cs {
		conflicts[ref.Key] = c
	}
	return accepted, conflicts
}
