// Package v1beta1 holds the InterceptorRoute API (http.keda.sh/v1beta1), the KEDA HTTP Add-on's
// current routing API. An InterceptorRoute names where requests go and how demand is measured;
// the user writes the KEDA ScaledObject. Lobby serves it with the same engine as
// HTTPScaledObjects, plus lobby's optional additions.
//
// +kubebuilder:object:generate=true
// +groupName=http.keda.sh
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the InterceptorRoute API.
	GroupVersion = schema.GroupVersion{Group: "http.keda.sh", Version: "v1beta1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource is the plural resource name of InterceptorRoutes, as used in API paths and RBAC rules.
const Resource = "interceptorroutes"

// Kind is the kind of an InterceptorRoute.
const Kind = "InterceptorRoute"
