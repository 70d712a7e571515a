package httpso

import (
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// NewRouteClient returns a REST client for the http.keda.sh/v1beta1 API group (InterceptorRoutes).
func NewRouteClient(cfg *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register InterceptorRoute types: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1beta1.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("create InterceptorRoute client: %w", err)
	}
	return client, nil
}

// NewRouteInformer returns an informer of the InterceptorRoutes in namespace (all namespaces when
// empty). Its objects are *v1beta1.InterceptorRoute, reduced by Trim before they are cached.
func NewRouteInformer(client rest.Interface, namespace string, resync time.Duration) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(client, v1beta1.Resource, namespace, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &v1beta1.InterceptorRoute{}, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	// SetTransform fails only once the informer has started; this one has not.
	_ = inf.SetTransform(Trim)
	return inf
}

// RoutesServed reports whether the API server serves InterceptorRoutes: a cluster upgraded with
// `helm upgrade`, which does not install new CRDs, may lack them. Binaries then run without them
// rather than wait forever for a watch that cannot start.
func RoutesServed(d discovery.DiscoveryInterface) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(v1beta1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", v1beta1.GroupVersion, err)
	}
	for _, r := range list.APIResources {
		if r.Name == v1beta1.Resource {
			return true, nil
		}
	}
	return false, nil
}
