package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SkipScaledObjectCreationAnnotation, set to "true" on an HTTPScaledObject, tells the operator not
// to create a KEDA ScaledObject for it (and to delete one it created before). Users set it when they
// write their own ScaledObject, for example to add more triggers.
const SkipScaledObjectCreationAnnotation = "httpscaledobject.keda.sh/skip-scaledobject-creation"

// OrphanScaledObjectAnnotation, set to "true" on an HTTPScaledObject, keeps its ScaledObject when
// the HTTPScaledObject is deleted: the operator writes the ScaledObject without an owner
// reference, as the KEDA HTTP Add-on does for the same annotation.
const OrphanScaledObjectAnnotation = "httpscaledobject.keda.sh/orphan-scaledobject"

// AddOnFinalizer is the finalizer the KEDA HTTP Add-on puts on every HTTPScaledObject it
// reconciles and removes on delete. Lobby does not need a finalizer; it removes this one, so
// that objects the add-on left behind can be deleted after a switch to lobby.
const AddOnFinalizer = "httpscaledobject.http.keda.sh"

// UpstreamTLSInsecureSkipVerifyAnnotation, set to "true" on an HTTPScaledObject, tells the
// interceptors not to verify the certificate of its app when the Service port speaks HTTPS
// (appProtocol https). Without it the certificate must be valid for the Service's DNS name
// (<service>.<namespace>.svc, or that name in the cluster domain) and signed by a CA the
// interceptor trusts. It is an escape hatch for apps with self-signed certificates: the traffic
// stays encrypted, but anyone who can take the pod's address can read it.
const UpstreamTLSInsecureSkipVerifyAnnotation = "lobby.dev/upstream-tls-insecure-skip-verify"

// Condition types and reasons written on HTTPScaledObject status.
const (
	// ConditionReady is True when the object is routed by the interceptors and its ScaledObject is
	// in place (or deliberately skipped).
	ConditionReady = "Ready"
	// ConditionScaledObjectReady mirrors the Ready condition of the KEDA ScaledObject.
	ConditionScaledObjectReady = "ScaledObjectReady"
	// ConditionActive mirrors the Active condition of the KEDA ScaledObject.
	ConditionActive = "Active"
)

// ScaleTargetRef names the workload to scale and the Service that routes to it.
//
// +kubebuilder:validation:XValidation:rule="has(self.portName) != has(self.port)",message="must define either the 'portName' or the 'port'"
type ScaleTargetRef struct {
	// Name of the workload (by default a Deployment) to scale.
	// +optional
	Name string `json:"name"`
	// APIVersion of the workload to scale; defaults to apps/v1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the workload to scale; defaults to Deployment.
	// +optional
	Kind string `json:"kind,omitempty"`
	// Service is the name of the Service, in the object's namespace, whose ready endpoints receive
	// the requests.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// Port is the Service port to route to. Exactly one of port and portName is set.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// PortName is the name of the Service port to route to. Exactly one of port and portName is set.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +optional
	PortName string `json:"portName,omitempty"`
}

// ColdStartTimeoutFailoverRef names a Service that answers requests which waited longer than the
// cold-start timeout for the target to become ready.
//
// +kubebuilder:validation:XValidation:rule="has(self.portName) != has(self.port)",message="must define either the 'portName' or the 'port'"
type ColdStartTimeoutFailoverRef struct {
	// Service is the name of the failover Service, in the object's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service"`
	// Port is the failover Service port. Exactly one of port and portName is set.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// PortName is the name of the failover Service port. Exactly one of port and portName is set.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +optional
	PortName string `json:"portName,omitempty"`
	// TimeoutSeconds is how long a request waits for the target before it is sent to the failover
	// Service. It is the object's cold-start timeout when set.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// ReplicaStruct bounds the number of replicas of the target workload.
//
// +kubebuilder:validation:XValidation:rule="!has(self.min) || !has(self.max) || self.min <= self.max",message="replicas.min must be less than or equal to replicas.max"
type ReplicaStruct struct {
	// Min is the number of replicas when idle (default 0: scale to zero).
	// +kubebuilder:validation:Minimum=0
	// +optional
	Min *int32 `json:"min,omitempty"`
	// Max is the largest number of replicas (default 100).
	// +kubebuilder:validation:Minimum=1
	// +optional
	Max *int32 `json:"max,omitempty"`
}

// ScalingMetricSpec selects the metric the workload is scaled on. At most one of concurrency and
// requestRate is set; with neither, concurrency with its default target is used.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.concurrency) && has(self.requestRate))",message="scalingMetric.concurrency and scalingMetric.requestRate are mutually exclusive"
type ScalingMetricSpec struct {
	// Concurrency scales on the number of requests in flight or held.
	// +optional
	Concurrency *ConcurrencyMetricSpec `json:"concurrency,omitempty"`
	// Rate scales on the number of requests per second, averaged over a window.
	// +optional
	Rate *RateMetricSpec `json:"requestRate,omitempty"`
}

// ConcurrencyMetricSpec configures scaling on concurrent requests.
type ConcurrencyMetricSpec struct {
	// TargetValue is the number of concurrent requests one replica should serve.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	TargetValue int `json:"targetValue"`
}

// RateMetricSpec configures scaling on the request rate.
//
// +kubebuilder:validation:XValidation:rule="duration(self.granularity) >= duration('1s')",message="requestRate.granularity must be at least 1s"
// +kubebuilder:validation:XValidation:rule="duration(self.granularity) <= duration(self.window)",message="requestRate.granularity must not be longer than requestRate.window"
// +kubebuilder:validation:XValidation:rule="duration(self.window) <= duration('1h')",message="requestRate.window must be at most 1h"
type RateMetricSpec struct {
	// TargetValue is the number of requests per second one replica should serve.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	TargetValue int `json:"targetValue"`
	// Window is the period the rate is averaged over.
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Window metav1.Duration `json:"window"`
	// Granularity is the size of the buckets the window is divided into (at least 1s).
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	Granularity metav1.Duration `json:"granularity"`
}

// HTTPScaledObjectTimeoutsSpec overrides the interceptor's global timeouts for this object. A
// timeout of 0s, which the KEDA HTTP Add-on accepts, means the global default, as if unset.
//
// +kubebuilder:validation:XValidation:rule="!has(self.conditionWait) || duration(self.conditionWait) >= duration('0s')",message="timeouts.conditionWait must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.responseHeader) || duration(self.responseHeader) >= duration('0s')",message="timeouts.responseHeader must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.request) || duration(self.request) >= duration('0s')",message="timeouts.request must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.conditionWait) || duration(self.conditionWait) <= duration('1h')",message="timeouts.conditionWait must be at most 1h"
// +kubebuilder:validation:XValidation:rule="!has(self.responseHeader) || duration(self.responseHeader) <= duration('1h')",message="timeouts.responseHeader must be at most 1h"
// +kubebuilder:validation:XValidation:rule="!has(self.request) || duration(self.request) <= duration('24h')",message="timeouts.request must be at most 24h"
type HTTPScaledObjectTimeoutsSpec struct {
	// ConditionWait is how long a request is held waiting for the target to have a ready endpoint
	// (the cold-start timeout). Defaults to the interceptor's global setting.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	ConditionWait *metav1.Duration `json:"conditionWait,omitempty"`
	// ResponseHeader is how long the interceptor waits for the response headers once the request
	// has been sent to the target. Defaults to the interceptor's global setting.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	ResponseHeader *metav1.Duration `json:"responseHeader,omitempty"`
	// Request bounds the whole exchange with the target, from forwarding the request to the end of
	// the response body; it does not include time held for a cold start. Unset means no bound
	// beyond the interceptor's global setting. Upgraded connections (WebSockets) are not bounded.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	// +optional
	Request *metav1.Duration `json:"request,omitempty"`
}

// Header is a request header a route matches on.
type Header struct {
	// Name of the header, matched case-insensitively.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	Name string `json:"name"`
	// Value the header must have; when unset, the header only has to be present.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Value *string `json:"value,omitempty"`
}

// OverflowPolicy says what happens to a request that arrives while the hold queue is full.
// +kubebuilder:validation:Enum=Reject;Placeholder
type OverflowPolicy string

const (
	// OverflowReject answers 503 with a Retry-After header.
	OverflowReject OverflowPolicy = "Reject"
	// OverflowPlaceholder answers with the configured placeholder response.
	OverflowPlaceholder OverflowPolicy = "Placeholder"
)

// ColdStartSpec bounds how requests are held while the target scales from zero. It is a lobby
// addition; objects without it use the interceptor's global settings.
//
// +kubebuilder:validation:XValidation:rule="!has(self.overflow) || self.overflow != 'Placeholder' || has(self.placeholder)",message="coldStart.placeholder is required when coldStart.overflow is Placeholder"
type ColdStartSpec struct {
	// MaxPendingRequests is the most requests held at once for this object by one interceptor.
	// Defaults to the interceptor's global setting.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// Overflow says how a request is answered when the hold queue is full: Reject (503 with
	// Retry-After) or Placeholder (the placeholder response).
	// +kubebuilder:default=Reject
	// +optional
	Overflow OverflowPolicy `json:"overflow,omitempty"`
	// Placeholder is the response given to requests that time out waiting for a cold start (when no
	// failover Service is set) and, with overflow Placeholder, to requests that find the queue full.
	// +optional
	Placeholder *PlaceholderSpec `json:"placeholder,omitempty"`
	// Mode says how a request is answered while the target has no ready endpoint: Hold (held
	// until the app answers), Placeholder (answered at once with the placeholder, or the waiting
	// page without one) or Auto (browsers get the waiting page at once, other clients are held).
	// Every mode counts the request as demand, so the app wakes. Defaults to the interceptor's
	// global setting (Hold unless changed).
	// +optional
	Mode ColdStartMode `json:"mode,omitempty"`
	// WaitingPage is the page a person sees at once while the app wakes (modes Auto and
	// Placeholder); lobby's built-in page when unset.
	// +optional
	WaitingPage *WaitingPageSpec `json:"waitingPage,omitempty"`
}

// ColdStartMode says how a request is answered while its target has no ready endpoint.
// +kubebuilder:validation:Enum=Hold;Placeholder;Auto
type ColdStartMode string

const (
	// ColdStartModeHold holds every request until the target answers or the cold-start timeout ends.
	ColdStartModeHold ColdStartMode = "Hold"
	// ColdStartModePlaceholder answers every request at once with the placeholder (or the waiting
	// page when there is none); the request still wakes the target.
	ColdStartModePlaceholder ColdStartMode = "Placeholder"
	// ColdStartModeAuto answers browsers (a GET or HEAD that prefers text/html) at once with the
	// waiting page, and holds every other request as Hold does.
	ColdStartModeAuto ColdStartMode = "Auto"
)

// WaitingPageSpec is where the waiting page's body comes from.
type WaitingPageSpec struct {
	// BodyFromConfigMap reads the page from a key of a ConfigMap in the object's namespace that
	// carries the label http.keda.sh/response-body: "true". The interceptors follow its changes,
	// and serve the built-in page while it cannot be read.
	// +optional
	BodyFromConfigMap *ConfigMapKeyRef `json:"bodyFromConfigMap,omitempty"`
}

// ConfigMapKeyRef is a key of a ConfigMap in the object's namespace.
type ConfigMapKeyRef struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key whose value is the body; "index.html" when unset. The Content-Type follows the key's
	// extension.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// PlaceholderHeaderValue is the value of one placeholder header: text and tabs, at most 4096
// bytes. Line breaks and other control characters, which an HTTP header value cannot hold, are
// refused.
// +kubebuilder:validation:MaxLength=4096
// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\x00-\\x08\\x0a-\\x1f\\x7f]')`,message="coldStart.placeholder.headers values must not hold line breaks or other control characters (tabs are allowed)"
type PlaceholderHeaderValue string

// PlaceholderSpec is a static response served while the target is not ready.
type PlaceholderSpec struct {
	// StatusCode of the placeholder response.
	// +kubebuilder:default=503
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	// +optional
	StatusCode int32 `json:"statusCode,omitempty"`
	// Headers of the placeholder response, by HTTP header name (a response cannot carry
	// another).
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule=`self.all(k, size(k) <= 256 && k.matches("^[A-Za-z0-9!#$%&'*+.^_|~-]+$"))`,message="coldStart.placeholder.headers names must be HTTP header names of at most 256 characters"
	// +optional
	Headers map[string]PlaceholderHeaderValue `json:"headers,omitempty"`
	// Body of the placeholder response.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	Body string `json:"body,omitempty"`
}

// HTTPScaledObjectSpec describes an app to route to and scale on HTTP demand.
type HTTPScaledObjectSpec struct {
	// Hosts routed to the target: exact names (matched case-insensitively) or wildcards such as
	// *.example.com. A port ("shop.example.org:8080") is accepted, as the KEDA HTTP Add-on accepts
	// it, and ignored: the host is routed whatever port the request names; the status says so.
	// With no hosts, or the host "*" (as the add-on writes it), the object is the catch-all for
	// requests that match no host of any other object.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:Pattern=`^(\*|(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// PathPrefixes routed to the target, matched on path segment boundaries; the longest wins.
	// With none, every path matches. A prefix without a leading slash ("api") is routed as if it
	// had one ("/api"), as the KEDA HTTP Add-on does; the status says so.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=1024
	// +optional
	PathPrefixes []string `json:"pathPrefixes,omitempty"`
	// Headers a request must all carry to be routed to the target, after hosts and paths match.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Headers []Header `json:"headers,omitempty"`
	// ScaleTargetRef names the workload to scale and the Service to route to.
	ScaleTargetRef ScaleTargetRef `json:"scaleTargetRef"`
	// ColdStartTimeoutFailoverRef names a Service that answers requests which waited too long for
	// the target to start.
	// +optional
	ColdStartTimeoutFailoverRef *ColdStartTimeoutFailoverRef `json:"coldStartTimeoutFailoverRef,omitempty"`
	// Replicas bounds the number of replicas of the target.
	// +optional
	Replicas *ReplicaStruct `json:"replicas,omitempty"`
	// TargetPendingRequests is the concurrency target per replica.
	// Deprecated: use scalingMetric.concurrency.targetValue.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	TargetPendingRequests *int32 `json:"targetPendingRequests,omitempty"`
	// CooldownPeriod is how many seconds the target must be idle before it is scaled to zero
	// (default 300).
	// +kubebuilder:validation:Minimum=0
	// +optional
	CooldownPeriod *int32 `json:"scaledownPeriod,omitempty"`
	// InitialCooldownPeriod is how many seconds after creation the target is left alone before it
	// may be scaled to zero (default 0).
	// +kubebuilder:validation:Minimum=0
	// +optional
	InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
	// ScalingMetric selects the metric the target is scaled on; concurrency by default.
	// +optional
	ScalingMetric *ScalingMetricSpec `json:"scalingMetric,omitempty"`
	// Timeouts override the interceptor's global timeouts for this object.
	// +optional
	Timeouts *HTTPScaledObjectTimeoutsSpec `json:"timeouts,omitempty"`
	// ColdStart bounds how requests are held while the target scales from zero.
	// +optional
	ColdStart *ColdStartSpec `json:"coldStart,omitempty"`
}

// HTTPScaledObjectStatus is the observed state of an HTTPScaledObject.
type HTTPScaledObjectStatus struct {
	// TargetWorkload is the workload being scaled, as apiVersion/kind/name.
	// +optional
	TargetWorkload string `json:"targetWorkload,omitempty"`
	// TargetService is the Service requests are routed to, as name:port.
	// +optional
	TargetService string `json:"targetService,omitempty"`
	// Normalized lists what lobby reads differently from how the spec is written: each entry
	// names a field the KEDA HTTP Add-on accepts in a lenient form (a host with a port, a path
	// prefix without a leading slash, a 0s timeout, a deprecated field) and how it is read.
	// Tidy the manifest and the list empties.
	// +optional
	Normalized []string `json:"normalized,omitempty"`
	// Conditions of the object; Ready says whether it is routed and scaled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// HTTPScaledObject routes HTTP requests for a set of hosts and paths to a Service, holds them while
// the workload behind it scales from zero, and scales the workload on HTTP demand.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=httpso
// +kubebuilder:printcolumn:name="TargetWorkload",type="string",JSONPath=".status.targetWorkload"
// +kubebuilder:printcolumn:name="TargetService",type="string",JSONPath=".status.targetService"
// +kubebuilder:printcolumn:name="MinReplicas",type="integer",JSONPath=".spec.replicas.min"
// +kubebuilder:printcolumn:name="MaxReplicas",type="integer",JSONPath=".spec.replicas.max"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
type HTTPScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired routing and scaling.
	Spec HTTPScaledObjectSpec `json:"spec,omitempty"`
	// Status is the observed state.
	Status HTTPScaledObjectStatus `json:"status,omitempty"`
}

// HTTPScaledObjectList is a list of HTTPScaledObjects.
//
// +kubebuilder:object:root=true
type HTTPScaledObjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the HTTPScaledObjects.
	Items []HTTPScaledObject `json:"items"`
}

func init() {
	SchemeBuilder.Register(&HTTPScaledObject{}, &HTTPScaledObjectList{})
}
