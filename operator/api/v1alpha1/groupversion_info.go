// Package v1alpha1 holds the HTTPScaledObject API (http.keda.sh/v1alpha1), the one public API of
// lobby. It accepts every manifest written for the KEDA HTTP Add-on's v1alpha1, with the same
// meaning, plus lobby's optional additions.
//
// +kubebuilder:object:generate=true
// +groupName=http.keda.sh
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the HTTPScaledObject API.
	GroupVersion = schema.GroupVersion{Group: "http.keda.sh", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource is the plural resource name of HTTPScaledObjects, as used in API paths and RBAC rules.
const Resource = "httpscaledobjects"
