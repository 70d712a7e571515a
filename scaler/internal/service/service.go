// Package service serves KEDA's ExternalScaler gRPC API (internal/externalscaler) from the sums
// of the interceptor fleet: IsActive and StreamIsActive from the activity of an HTTPScaledObject,
// GetMetricSpec and GetMetrics from its scaling metric. docs/scaler.md describes the behaviour.
package service

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/scaler/internal/fleet"
)

// MetadataKey is the trigger metadata key naming the HTTPScaledObject, in the ScaledObject's
// namespace. The operator writes it; users who manage their own ScaledObject set it.
const MetadataKey = "httpScaledObject"

// RouteMetadataKey is the trigger metadata key naming the InterceptorRoute, in the ScaledObject's
// namespace; users write it in their ScaledObject. It wins over MetadataKey when both are set, as
// in the KEDA HTTP Add-on.
const RouteMetadataKey = "interceptorRoute"

// DefaultTargetValue is the target of either metric when the HTTPScaledObject gives none, as in
// the KEDA HTTP Add-on.
const DefaultTargetValue = 100

// Objects looks HTTPScaledObjects and InterceptorRoutes up; *InformerObjects implements it.
type Objects interface {
	// Get returns the HTTPScaledObject namespace/name, or false when there is none.
	Get(namespace, name string) (*v1alpha1.HTTPScaledObject, bool)
	// Route returns the InterceptorRoute namespace/name, or false when there is none.
	Route(namespace, name string) (*v1beta1.InterceptorRoute, bool)
	// HasSynced reports whether the objects have been listed once; before that, a missing
	// object may just not be known yet.
	HasSynced() bool
	// Conflict returns why the object is not routed (see httpso.Decide), or false when it is.
	Conflict(ref httpso.Ref) (httpso.Conflict, bool)
}

// Counts gives the sums over the interceptors; *fleet.Fleet implements it.
type Counts interface {
	// Sum returns the counts of key ("namespace/name") summed over the interceptors.
	Sum(key string) fleet.Sum
	// Watch starts watching the activity of key.
	Watch(key string) *fleet.Watch
}

var _ Counts = (*fleet.Fleet)(nil)

// Server implements externalscaler.ExternalScalerServer.
type Server struct {
	externalscaler.UnimplementedExternalScalerServer

	objects Objects
	counts  Counts
	log     logr.Logger
	// stopping is closed by Stop: open streams end, so a graceful stop need not wait for KEDA to
	// close them (it never does on its own).
	stopping chan struct{}
	stopOnce sync.Once
}

var _ externalscaler.ExternalScalerServer = (*Server)(nil)

// New returns a Server answering from objects and counts.
func New(objects Objects, counts Counts, log logr.Logger) *Server {
	return &Server{objects: objects, counts: counts, log: log, stopping: make(chan struct{})}
}

// Stop ends every open StreamIsActive stream cleanly (the client sees the end of the stream and
// reconnects, to another replica when this one is going away). Later streams end at once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// Metric is one scaling metric of an HTTPScaledObject or InterceptorRoute.
type Metric struct {
	// Name is the metric's name as given to KEDA (which prefixes it with "s<trigger index>-").
	Name string
	// Rate is true for the request-rate metric, false for concurrency.
	Rate bool
	// Target is the metric's target value per replica.
	Target float64
}

// MetricFor returns o's scaling metric: scalingMetric.requestRate when set, else
// scalingMetric.concurrency when set, else concurrency with the deprecated targetPendingRequests
// as its target. A target of zero takes DefaultTargetValue.
func MetricFor(o *v1alpha1.HTTPScaledObject) Metric {
	m := Metric{Name: MetricName(o.Namespace, o.Name), Target: DefaultTargetValue}
	sm := o.Spec.ScalingMetric
	switch {
	case sm != nil && sm.Rate != nil:
		m.Rate = true
		if sm.Rate.TargetValue > 0 {
			m.Target = float64(sm.Rate.TargetValue)
		}
	case sm != nil && sm.Concurrency != nil:
		if sm.Concurrency.TargetValue > 0 {
			m.Target = float64(sm.Concurrency.TargetValue)
		}
	case o.Spec.TargetPendingRequests != nil && *o.Spec.TargetPendingRequests > 0:
		m.Target = float64(*o.Spec.TargetPendingRequests)
	}
	return m
}

// MetricName returns the metric name of namespace/name: "http-" and the key, with every byte
// other than letters, digits, "-" and "." written as "_" and four hex digits, as the KEDA HTTP
// Add-on names it ("http-shop_002Fcart"), so HPA metric names survive a migration.
func MetricName(namespace, name string) string {
	s := "http-" + namespace + "/" + name
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%04X", c)
	}
	return b.String()
}

// resolve returns the key and metrics of the object ref names (an InterceptorRoute by
// RouteMetadataKey, else an HTTPScaledObject by MetadataKey), or a gRPC status error saying what
// is wrong. Both kinds are counted under their "namespace/name" key.
func (s *Server) resolve(ref *externalscaler.ScaledObjectRef) (string, []Metric, error) {
	if ref == nil {
		return "", nil, status.Error(codes.InvalidArgument, "scaledObjectRef is required")
	}
	if ref.GetNamespace() == "" {
		return "", nil, status.Errorf(codes.InvalidArgument, "scaledObjectRef.namespace is required (ScaledObject %q)", ref.GetName())
	}
	ns := ref.GetNamespace()
	kind, name := "InterceptorRoute", ref.GetScalerMetadata()[RouteMetadataKey]
	if name == "" {
		kind, name = "HTTPScaledObject", ref.GetScalerMetadata()[MetadataKey]
	}
	if name == "" {
		return "", nil, status.Errorf(codes.InvalidArgument,
			"trigger metadata %q or %q is required: set it to the name of the InterceptorRoute or HTTPScaledObject in namespace %q (ScaledObject %s/%s)",
			RouteMetadataKey, MetadataKey, ns, ns, ref.GetName())
	}
	var metrics []Metric
	if kind == "InterceptorRoute" {
		if r, ok := s.objects.Route(ns, name); ok {
			metrics = RouteMetrics(r)
		}
	} else if o, ok := s.objects.Get(ns, name); ok {
		metrics = []Metric{MetricFor(o)}
	}
	if metrics == nil && !s.objects.HasSynced() {
		// A scaler that has just started has not listed the objects yet: KEDA retries
		// Unavailable, and NotFound would be a false answer.
		return "", nil, status.Errorf(codes.Unavailable, "scaler is starting: %ss are not listed yet (looking for %s/%s)", kind, ns, name)
	}
	if metrics == nil {
		return "", nil, status.Errorf(codes.NotFound, "%s %s/%s not found", kind, ns, name)
	}
	return ns + "/" + name, metrics, nil
}

// refOf returns the kind and key of the object ref names; ref has been through resolve.
func refOf(ref *externalscaler.ScaledObjectRef) httpso.Ref {
	ns := ref.GetNamespace()
	if name := ref.GetScalerMetadata()[RouteMetadataKey]; name != "" {
		return httpso.Ref{Kind: httpso.KindInterceptorRoute, Key: ns + "/" + name}
	}
	return httpso.Ref{Kind: httpso.KindHTTPScaledObject, Key: ns + "/" + ref.GetScalerMetadata()[MetadataKey]}
}

// routed reports whether the interceptors route the object ref names. One that is not (another
// namespace owns its host, an older object claims its requests, or the other kind has its name)
// is never active and asks for no capacity, whatever counts are reported under its key: its key
// may be shared with the object of the other kind that is routed, and an interceptor that has not
// seen the latest objects yet may still count it.
func (s *Server) routed(ref *externalscaler.ScaledObjectRef) bool {
	_, lost := s.objects.Conflict(refOf(ref))
	return !lost
}

// sum returns the sums of key, or Unavailable when interceptor pods are listed but none of them
// has counts that count: every stream has been down for longer than the grace period. KEDA does
// not scale to zero on a scaler error, so a scaler cut off from the interceptors does not make
// busy apps look idle.
func (s *Server) sum(key string) (fleet.Sum, error) {
	sum := s.counts.Sum(key)
	if sum.Listed > 0 && sum.Interceptors == 0 {
		return sum, status.Errorf(codes.Unavailable,
			"no interceptor counts for %s: none of the %d interceptor pods has a stream up (or lost for less than the grace period)", key, sum.Listed)
	}
	return sum, nil
}

// IsActive reports whether the object has anything held, in flight or open on any interceptor,
// or a non-zero request rate, whatever its scaling metric.
func (s *Server) IsActive(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	key, _, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	sum, err := s.sum(key)
	if err != nil {
		return nil, err
	}
	return &externalscaler.IsActiveResponse{Result: sum.Active && s.routed(ref)}, nil
}

// StreamIsActive sends the object's current activity, then true on each idle→busy edge and false
// on each busy→idle edge, until the client goes away. It never sends true twice for one edge,
// because KEDA refreshes its activity clock on every true.
func (s *Server) StreamIsActive(ref *externalscaler.ScaledObjectRef, srv externalscaler.ExternalScaler_StreamIsActiveServer) error {
	key, _, err := s.resolve(ref)
	if err != nil {
		return err
	}
	w := s.counts.Watch(key)
	defer w.Close()
	log := s.log.WithValues("object", key)
	log.V(1).Info("activity stream opened")
	defer log.V(1).Info("activity stream closed")
	send := func(v bool) error {
		if err := srv.Send(&externalscaler.IsActiveResponse{Result: v}); err != nil {
			return fmt.Errorf("send activity of %s: %w", key, err)
		}
		return nil
	}

	active, sentRises, changed := w.State()
	active = active && s.routed(ref)
	if err := send(active); err != nil {
		return err
	}
	last := active
	for {
		select {
		case <-srv.Context().Done():
			return nil
		case <-s.stopping:
			return nil
		case <-changed:
		}
		var rises uint64
		active, rises, changed = w.State()
		if !s.routed(ref) {
			// Not routed: its edges are not its own (see routed).
			active, sentRises = false, rises
		}
		switch {
		case rises > sentRises:
			// A new idle→busy edge, perhaps with a busy→idle one that came and went between two
			// wake-ups: KEDA hears of the activity, then of the idle state if it is already over.
			sentRises = rises
			if err := send(true); err != nil {
				return err
			}
			last = true
			if !active {
				if err := send(false); err != nil {
					return err
				}
				last = false
			}
		case active != last:
			if err := send(active); err != nil {
				return err
			}
			last = active
		}
	}
}

// GetMetricSpec returns the object's metrics and their targets per replica: one for an
// HTTPScaledObject, one or two for an InterceptorRoute.
func (s *Server) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	_, metrics, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	specs := make([]*externalscaler.MetricSpec, 0, len(metrics))
	for _, m := range metrics {
		specs = append(specs, &externalscaler.MetricSpec{
			MetricName:      m.Name,
			TargetSize:      int64(math.Round(m.Target)),
			TargetSizeFloat: m.Target,
		})
	}
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: specs}, nil
}

// GetMetrics returns the current values of the object's metrics: in flight plus held summed over
// the interceptors for concurrency, the sum of their per-second rates for the request rate. When
// the object has two metrics (an InterceptorRoute with both), only the one KEDA names is returned,
// or both when it names none; an object with one metric returns it whatever the name, since KEDA
// asks for the name GetMetricSpec gave.
func (s *Server) GetMetrics(_ context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	if req == nil {
		return nil, status.Error(codes.InvalidArgument, "request is required")
	}
	key, metrics, err := s.resolve(req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	sum, err := s.sum(key)
	if err != nil {
		return nil, err
	}
	routed := s.routed(req.GetScaledObjectRef())
	values := make([]*externalscaler.MetricValue, 0, len(metrics))
	for _, m := range metrics {
		if len(metrics) > 1 && req.GetMetricName() != "" && req.GetMetricName() != m.Name {
			continue
		}
		v := float64(sum.Concurrency())
		if m.Rate {
			v = sum.Rate
		}
		if !routed {
			v = 0
		}
		values = append(values, &externalscaler.MetricValue{
			MetricName:       m.Name,
			MetricValue:      int64(math.Round(v)),
			MetricValueFloat: v,
		})
	}
	if len(values) == 0 {
		return nil, status.Errorf(codes.NotFound, "metric %q is not a metric of %s", req.GetMetricName(), key)
	}
	return &externalscaler.GetMetricsResponse{MetricValues: values}, nil
}
