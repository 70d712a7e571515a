// Package httpso holds what lobby's binaries share about HTTPScaledObjects: a typed informer, and
// the rules that decide which object owns a host, path and header combination when two claim the
// same one.
package httpso

import (
	"cmp"
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

// Trim is the informer's transform: it drops what no lobby binary reads from a cached
// HTTPScaledObject (managed fields, annotations such as kubectl's last-applied copy of the whole
// object, labels and status), keeping the name, namespace, UID, resource version, generation,
// creation time, the spec, which it normalises (see Normalize), and the one annotation routing
// reads (v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation). Other objects pass unchanged.
func Trim(obj any) (any, error) {
	o, ok := obj.(*v1alpha1.HTTPScaledObject)
	if !ok {
		return obj, nil
	}
	o.ManagedFields = nil
	if v, ok := o.Annotations[v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation]; ok {
		o.Annotations = map[string]string{v1alpha1.UpstreamTLSInsecureSkipVerifyAnnotation: v}
	} else {
		o.Annotations = nil
	}
	o.Labels = nil
	o.Status = v1alpha1.HTTPScaledObjectStatus{}
	Normalize(&o.Spec)
	return o, nil
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
	hosts := spec.Hosts
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	paths := spec.PathPrefixes
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	headers := HeaderKey(spec.Headers)
	claims := make([]Claim, 0, len(hosts)*len(paths))
	for _, h := range hosts {
		for _, p := range paths {
			claims = append(claims, Claim{Host: NormalizeHost(h), PathPrefix: NormalizePathPrefix(p), Headers: headers})
		}
	}
	slices.SortFunc(claims, func(a, b Claim) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.PathPrefix, b.PathPrefix))
	})
	return slices.Compact(claims)
}

// Conflict records that an object is not routed because an older one already claims some of what
// it claims.
type Conflict struct {
	// Winner is the key of the object that keeps the claim.
	Winner string
	// Claim is the first contested claim.
	Claim Claim
}

// Older orders objects by precedence: the older creation time first, then the namespace/name key,
// so the result is the same in every binary and on every replica.
func Older(a, b *v1alpha1.HTTPScaledObject) int {
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(Key(a), Key(b))
}

// Resolve decides which objects are routed. Objects are taken oldest first (see Older); an object
// whose claims collide with a claim of an object already accepted is not routed at all, and its
// conflict is returned keyed by its own key. The accepted objects are returned in precedence order.
func Resolve(objs []*v1alpha1.HTTPScaledObject) (accepted []*v1alpha1.HTTPScaledObject, conflicts map[string]Conflict) {
	sorted := slices.Clone(objs)
	slices.SortFunc(sorted, Older)
	owner := make(map[Claim]string, len(sorted))
	conflicts = map[string]Conflict{}
	accepted = make([]*v1alpha1.HTTPScaledObject, 0, len(sorted))
	for _, o := range sorted {
		claims := Claims(&o.Spec)
		lost := false
		for _, c := range claims {
			if w, ok := owner[c]; ok {
				conflicts[Key(o)] = Conflict{Winner: w, Claim: c}
				lost = true
				break
			}
		}
		if lost {
			continue
		}
		for _, c := range claims {
			owner[c] = Key(o)
		}
		accepted = append(accepted, o)
	}
	return accepted, conflicts
}
