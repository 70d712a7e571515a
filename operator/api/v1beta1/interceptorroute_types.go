package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types written on InterceptorRoute status.
const (
	// ConditionReady is True when the route is routed by the interceptors: it claims no host, path
	// and header set an older object claims, its Services exist, and every ConfigMap it reads a
	// response body from is there.
	ConditionReady = "Ready"
	// ConditionScaledObjectFound is True when a KEDA ScaledObject in the route's namespace has an
	// external-push trigger naming the route; the user writes that ScaledObject.
	ConditionScaledObjectFound = "ScaledObjectFound"
)

// Condition reasons written on InterceptorRoute status.
const (
	// ReasonReconciled: the route is in the interceptors' routing table (the reason the KEDA
	// HTTP Add-on gives a ready route).
	ReasonReconciled = "Reconciled"
	// ReasonConflict: an older HTTPScaledObject or InterceptorRoute claims the same requests.
	ReasonConflict = "Conflict"
	// ReasonServiceNotFound: the target or fallback Service, or its port, does not exist.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonConfigMapNotFound: a ConfigMap or key named by bodyFromConfigMap is missing or
	// unusable; the interceptor answers such requests with a 500 that says so.
	ReasonConfigMapNotFound = "ConfigMapNotFound"
	// ReasonReservedPath: a path lies under the prefix the interceptors answer themselves
	// ("/.lobby/", the waiting page's status endpoint); the route is not routed.
	ReasonReservedPath = "ReservedPath"
)

// DurationPattern is the form of every duration in the API: a Go duration without a sign, or 0.
const DurationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`

// PathMatch is one path prefix a rule matches.
type PathMatch struct {
	// Value is the path prefix, matched on segment boundaries; the longest matching prefix wins.
	// A value without a leading slash ("api") is read as if it had one.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// HeaderMatch is one request header a rule matches.
type HeaderMatch struct {
	// Name of the header, matched case-insensitively.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Name string `json:"name"`
	// Value the header must have; when unset, the header only has to be present.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Value *string `json:"value,omitzero"`
}

// RoutingRule is one set of requests: those whose host is one of hosts, whose path starts with
// one of paths, and which carry all of headers. An empty list matches everything.
type RoutingRule struct {
	// Hosts matched: exact names (case-insensitive), wildcards such as *.example.com, or "*" for
	// the catch-all. An exact host beats a wildcard, a longer wildcard a shorter one.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:Pattern=`^(\*|(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`
	// +optional
	Hosts []string `json:"hosts,omitzero"`
	// Paths matched by prefix; the longest matching prefix wins.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Paths []PathMatch `json:"paths,omitzero"`
	// Headers a request must all carry.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Headers []HeaderMatch `json:"headers,omitzero"`
}

// ConcurrencyTargetSpec scales on the number of requests in flight or held.
type ConcurrencyTargetSpec struct {
	// TargetValue is the number of concurrent requests one replica should serve.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	TargetValue int32 `json:"targetValue"`
}

// RequestRateTargetSpec scales on requests per second averaged over a sliding window.
//
// +kubebuilder:validation:XValidation:rule="duration(self.granularity) >= duration('1s')",message="scalingMetric.requestRate.granularity must be at least 1s"
// +kubebuilder:validation:XValidation:rule="duration(self.granularity) <= duration(self.window)",message="scalingMetric.requestRate.granularity must not be longer than scalingMetric.requestRate.window"
// +kubebuilder:validation:XValidation:rule="duration(self.window) <= duration('1h')",message="scalingMetric.requestRate.window must be at most 1h"
type RequestRateTargetSpec struct {
	// Granularity is the size of the buckets the window is divided into.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Granularity metav1.Duration `json:"granularity,omitzero"`
	// TargetValue is the number of requests per second one replica should serve.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	TargetValue int32 `json:"targetValue"`
	// Window is the period the rate is averaged over.
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Window metav1.Duration `json:"window,omitzero"`
}

// ScalingMetricSpec says how demand is measured. With both metrics the scaler reports both and
// the HPA follows whichever asks for more replicas.
//
// +kubebuilder:validation:XValidation:rule="has(self.concurrency) || has(self.requestRate)",message="spec.scalingMetric needs at least one of 'concurrency' or 'requestRate'"
type ScalingMetricSpec struct {
	// Concurrency scales on requests in flight or held.
	// +optional
	Concurrency *ConcurrencyTargetSpec `json:"concurrency,omitzero"`
	// RequestRate scales on requests per second.
	// +optional
	RequestRate *RequestRateTargetSpec `json:"requestRate,omitzero"`
}

// TargetRef is the Service, in the route's namespace, whose ready endpoints receive the requests.
//
// +kubebuilder:validation:XValidation:rule="has(self.port) != has(self.portName)",message="spec.target needs exactly one of 'port' or 'portName'"
type TargetRef struct {
	// Service is the name of the Service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// Port is the Service port number. Exactly one of port and portName is set.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitzero"`
	// PortName is the name of the Service port. Exactly one of port and portName is set.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +optional
	PortName string `json:"portName,omitzero"`
}

// ServiceRef is a Service, in the route's namespace, by name and port.
//
// +kubebuilder:validation:XValidation:rule="has(self.port) != has(self.portName)",message="spec.coldStart.fallback.service needs exactly one of 'port' or 'portName'"
type ServiceRef struct {
	// Name of the Service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Port is the Service port number. Exactly one of port and portName is set.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitzero"`
	// PortName is the name of the Service port. Exactly one of port and portName is set.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +optional
	PortName string `json:"portName,omitzero"`
}

// StaticResponse is a fixed HTTP response. Its body is inline, or read from a ConfigMap, or
// empty.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.body) && has(self.bodyFromConfigMap))",message="response takes at most one of 'body' or 'bodyFromConfigMap'"
type StaticResponse struct {
	// StatusCode of the response; 503 for a cold-start placeholder and 200 for a static route
	// when unset.
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	// +optional
	StatusCode int32 `json:"statusCode,omitzero"`
	// Body of the response.
	// +kubebuilder:validation:MaxLength=32768
	// +optional
	Body *string `json:"body,omitzero"`
	// BodyFromConfigMap reads the body from a key of a ConfigMap in the route's namespace. The
	// interceptor watches only the ConfigMaps routes name, and follows their changes.
	// +optional
	BodyFromConfigMap *ConfigMapKeyRef `json:"bodyFromConfigMap,omitzero"`
	// Headers of the response, by HTTP header name.
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule=`self.all(k, size(k) <= 256 && k.matches("^[A-Za-z0-9!#$%&'*+.^_|~-]+$"))`,message="response.headers names must be HTTP header names of at most 256 characters"
	// +optional
	Headers map[string]HeaderValue `json:"headers,omitzero"`
}

// HeaderValue is the value of one response header: text and tabs, at most 4096 bytes. Line
// breaks and other control characters, which a header value cannot hold, are refused.
// +kubebuilder:validation:MaxLength=4096
// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\x00-\\x08\\x0a-\\x1f\\x7f]')`,message="response.headers values must not hold line breaks or other control characters (tabs are allowed)"
type HeaderValue string

// ConfigMapKeyRef is a key of a ConfigMap in the route's namespace.
type ConfigMapKeyRef struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key whose value is the body. When unset, the key is the request path without its leading
	// "/" ("index.html" for "/"), and the Content-Type follows the key's extension unless the
	// headers set one.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitzero"`
}

// ColdStartFallback sends held requests to another Service when the readiness wait runs out.
type ColdStartFallback struct {
	// Service that answers instead.
	Service *ServiceRef `json:"service,omitzero"`
}

// ColdStartPlaceholder answers at once, without holding, while the target has no ready endpoint;
// the request still wakes the target.
type ColdStartPlaceholder struct {
	// Response given.
	Response *StaticResponse `json:"response,omitzero"`
}

// OverflowPolicy says how a request is answered when the hold queue is full.
// +kubebuilder:validation:Enum=Reject;Placeholder
type OverflowPolicy string

const (
	// OverflowReject answers 503 with Retry-After.
	OverflowReject OverflowPolicy = "Reject"
	// OverflowPlaceholder answers with the placeholder response.
	OverflowPlaceholder OverflowPolicy = "Placeholder"
)

// ColdStartSpec says what happens while the target has no ready endpoint.
//
// +kubebuilder:validation:XValidation:rule="has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests) || has(self.mode) || has(self.waitingPage)",message="spec.coldStart needs at least one of 'fallback', 'placeholder', 'maxPendingRequests', 'mode' or 'waitingPage'"
// +kubebuilder:validation:XValidation:rule="!has(self.overflow) || self.overflow != 'Placeholder' || has(self.placeholder)",message="spec.coldStart.placeholder is required when spec.coldStart.overflow is Placeholder"
type ColdStartSpec struct {
	// Fallback receives held requests once the readiness timeout runs out.
	// +optional
	Fallback *ColdStartFallback `json:"fallback,omitzero"`
	// Placeholder answers requests at once while the target has no ready endpoint.
	// +optional
	Placeholder *ColdStartPlaceholder `json:"placeholder,omitzero"`
	// MaxPendingRequests is the most requests held at once for this route by one interceptor
	// (a lobby addition). Defaults to the interceptor's global setting.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitzero"`
	// Overflow says how a request that finds the hold queue full is answered: Reject (503 with
	// Retry-After) or Placeholder (a lobby addition).
	// +optional
	Overflow OverflowPolicy `json:"overflow,omitzero"`
	// Mode says how a request is answered while the target has no ready endpoint (a lobby
	// addition): Hold (held until the app answers), Placeholder (answered at once with the
	// placeholder, or the waiting page without one) or Auto (browsers get the waiting page at
	// once, other clients are held). Every mode counts the request as demand, so the target
	// wakes. When unset: Placeholder if placeholder is set (as in the KEDA HTTP Add-on), else
	// the interceptor's global setting.
	// +optional
	Mode ColdStartMode `json:"mode,omitzero"`
	// WaitingPage is the page a person sees at once while the target wakes (modes Auto and
	// Placeholder without a placeholder); lobby's built-in page when unset (a lobby addition).
	// +optional
	WaitingPage *WaitingPage `json:"waitingPage,omitzero"`
}

// ColdStartMode says how a request is answered while its target has no ready endpoint.
// +kubebuilder:validation:Enum=Hold;Placeholder;Auto
type ColdStartMode string

const (
	// ColdStartModeHold holds every request until the target answers or the readiness timeout
	// ends.
	ColdStartModeHold ColdStartMode = "Hold"
	// ColdStartModePlaceholder answers every request at once with the placeholder (or the waiting
	// page when there is none); the request still wakes the target.
	ColdStartModePlaceholder ColdStartMode = "Placeholder"
	// ColdStartModeAuto answers browsers (a GET or HEAD that prefers text/html) at once with the
	// waiting page, and holds every other request as Hold does.
	ColdStartModeAuto ColdStartMode = "Auto"
)

// WaitingPage is where the waiting page's body comes from.
type WaitingPage struct {
	// BodyFromConfigMap reads the page from a key of a ConfigMap in the route's namespace
	// ("index.html" when the key is unset). The interceptors follow its changes, and serve the
	// built-in page while it cannot be read.
	// +optional
	BodyFromConfigMap *ConfigMapKeyRef `json:"bodyFromConfigMap,omitzero"`
}

// InterceptorRouteTimeouts override the interceptor's global timeouts for this route; unset means
// the global setting, and "0s" means no bound.
//
// +kubebuilder:validation:XValidation:rule="!has(self.readiness) || duration(self.readiness) <= duration('1h')",message="spec.timeouts.readiness must be at most 1h"
// +kubebuilder:validation:XValidation:rule="!has(self.responseHeader) || duration(self.responseHeader) <= duration('1h')",message="spec.timeouts.responseHeader must be at most 1h"
// +kubebuilder:validation:XValidation:rule="!has(self.request) || duration(self.request) <= duration('24h')",message="spec.timeouts.request must be at most 24h"
type InterceptorRouteTimeouts struct {
	// Readiness is how long a request is held waiting for a ready endpoint. "0s" holds until the
	// client gives up, or 30s when a fallback is set.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	Readiness *metav1.Duration `json:"readiness,omitzero"`
	// Request bounds the exchange with the target, from forwarding to the end of the response.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	Request *metav1.Duration `json:"request,omitzero"`
	// ResponseHeader bounds the wait for the target's response headers once the request is sent.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	ResponseHeader *metav1.Duration `json:"responseHeader,omitzero"`
}

// StaticRouteResponseMode says when a static route answers.
// +kubebuilder:validation:Enum=Always;WhenUnavailable
type StaticRouteResponseMode string

const (
	// StaticRouteAlways answers every matching request; the target is never contacted.
	StaticRouteAlways StaticRouteResponseMode = "Always"
	// StaticRouteWhenUnavailable forwards matching requests while the target has a ready
	// endpoint, and answers them while it has none.
	StaticRouteWhenUnavailable StaticRouteResponseMode = "WhenUnavailable"
)

// StaticRoute answers some requests with a fixed response. Its requests are never counted toward
// scaling, never held and never wake the target: health checks and load-balancer probes.
type StaticRoute struct {
	// Rules of the requests answered; a request matching any of them is.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Rules []RoutingRule `json:"rules"`
	// Response given.
	Response StaticResponse `json:"response"`
	// ResponseMode is Always or WhenUnavailable (the default).
	// +kubebuilder:default=WhenUnavailable
	// +optional
	ResponseMode StaticRouteResponseMode `json:"responseMode,omitzero"`
}

// InterceptorRouteSpec describes where requests go and how their demand is measured.
type InterceptorRouteSpec struct {
	// Target is the Service that receives the requests.
	Target TargetRef `json:"target"`
	// ColdStart says what happens while the target has no ready endpoint.
	// +optional
	ColdStart *ColdStartSpec `json:"coldStart,omitzero"`
	// Timeouts override the interceptor's global timeouts.
	// +optional
	Timeouts InterceptorRouteTimeouts `json:"timeouts,omitzero"`
	// Rules of the requests routed to the target; with none, every request is (the catch-all).
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Rules []RoutingRule `json:"rules,omitzero"`
	// ScalingMetric says how demand is measured.
	ScalingMetric ScalingMetricSpec `json:"scalingMetric"`
	// StaticRoutes answer some requests with fixed responses, first match in list order.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +optional
	StaticRoutes []StaticRoute `json:"staticRoutes,omitzero"`
}

// InterceptorRouteStatus is the observed state of an InterceptorRoute.
type InterceptorRouteStatus struct {
	// Normalized lists what lobby reads differently from how the spec is written (a host with a
	// port, a path without a leading slash), naming each field.
	// +optional
	Normalized []string `json:"normalized,omitempty"`
	// Conditions of the route; Ready says whether it is routed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitzero"`
}

// InterceptorRoute routes HTTP requests to a Service, holds them while it scales from zero, and
// measures their demand for a KEDA ScaledObject the user writes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ir
// +kubebuilder:printcolumn:name="TargetService",type="string",JSONPath=".spec.target.service"
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Reason",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].reason",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type InterceptorRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// Spec is the desired routing.
	Spec InterceptorRouteSpec `json:"spec,omitzero"`
	// Status is the observed state.
	// +optional
	Status InterceptorRouteStatus `json:"status,omitzero"`
}

// InterceptorRouteList is a list of InterceptorRoutes.
//
// +kubebuilder:object:root=true
type InterceptorRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	// Items are the InterceptorRoutes.
	Items []InterceptorRoute `json:"items"`
}

func init() {
	SchemeBuilder.Register(&InterceptorRoute{}, &InterceptorRouteList{})
}
