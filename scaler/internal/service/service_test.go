package service

import (
	"reflect"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/internal/externalscaler"
	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

func TestMetricFor(t *testing.T) {
	obj := func(spec v1alpha1.HTTPScaledObjectSpec) *v1alpha1.HTTPScaledObject {
		return &v1alpha1.HTTPScaledObject{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}, Spec: spec}
	}
	tests := []struct {
		name string
		spec v1alpha1.HTTPScaledObjectSpec
		want Metric
	}{
		{"no metric at all is concurrency with target 100", v1alpha1.HTTPScaledObjectSpec{}, Metric{Target: 100}},
		{"targetPendingRequests is the concurrency target when scalingMetric is absent",
			v1alpha1.HTTPScaledObjectSpec{TargetPendingRequests: ptr.To[int32](7)}, Metric{Target: 7}},
		{"scalingMetric.concurrency wins over targetPendingRequests",
			v1alpha1.HTTPScaledObjectSpec{TargetPendingRequests: ptr.To[int32](7), ScalingMetric: &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{TargetValue: 30}}},
			Metric{Target: 30}},
		{"an unset concurrency target takes 100",
			v1alpha1.HTTPScaledObjectSpec{ScalingMetric: &v1alpha1.ScalingMetricSpec{Concurrency: &v1alpha1.ConcurrencyMetricSpec{}}}, Metric{Target: 100}},
		{"requestRate is the rate metric",
			v1alpha1.HTTPScaledObjectSpec{ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{TargetValue: 25}}}, Metric{Rate: true, Target: 25}},
		{"an unset rate target takes 100",
			v1alpha1.HTTPScaledObjectSpec{ScalingMetric: &v1alpha1.ScalingMetricSpec{Rate: &v1alpha1.RateMetricSpec{}}}, Metric{Rate: true, Target: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Name = "http-shop_002Fcart"
			if got := MetricFor(obj(tt.spec)); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMetricNameEscapesAsTheAddOnDoes(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"default", "xkcd"}:       "http-default_002Fxkcd",
		{"a-b", "c.d"}:            "http-a-b_002Fc.d",
		{"Mixed0", "under_score"}: "http-Mixed0_002Funder_005Fscore",
	} {
		if got := MetricName(in[0], in[1]); got != want {
			t.Errorf("MetricName(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}

// objectsFake is a fixed set of objects that has or has not been listed yet.
type objectsFake struct {
	objs   map[string]*v1alpha1.HTTPScaledObject
	routes map[string]*v1beta1.InterceptorRoute
	synced bool
	// conflicts are the objects not routed.
	conflicts map[httpso.Ref]httpso.Conflict
}

func (o objectsFake) Route(namespace, name string) (*v1beta1.InterceptorRoute, bool) {
	r, ok := o.routes[namespace+"/"+name]
	return r, ok
}

func (o objectsFake) Get(namespace, name string) (*v1alpha1.HTTPScaledObject, bool) {
	h, ok := o.objs[namespace+"/"+name]
	return h, ok
}

func (o objectsFake) HasSynced() bool { return o.synced }

func (o objectsFake) Conflict(ref httpso.Ref) (httpso.Conflict, bool) {
	c, ok := o.conflicts[ref]
	return c, ok
}

func TestAStartingScalerAnswersUnavailable(t *testing.T) {
	known := map[string]*v1alpha1.HTTPScaledObject{"shop/cart": {}}
	ref := func(name string) *externalscaler.ScaledObjectRef {
		return &externalscaler.ScaledObjectRef{Name: name, Namespace: "shop", ScalerMetadata: map[string]string{MetadataKey: name}}
	}
	for _, tc := range []struct {
		name    string
		synced  bool
		object  string
		want    codes.Code
		message string
	}{
		{"An object not listed yet is Unavailable while the objects are being listed.", false, "cart-2", codes.Unavailable, "scaler is starting"},
		{"An unknown object is NotFound once the objects are listed.", true, "cart-2", codes.NotFound, "shop/cart-2 not found"},
		{"A known object is found even before the list has finished.", false, "cart", codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(objectsFake{objs: known, synced: tc.synced}, nil, logr.Discard())
			_, _, err := s.resolve(ref(tc.object))
			if got := status.Code(err); got != tc.want {
				t.Fatalf("resolve = %v (code %v), want code %v", err, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("resolve = %v, want a message containing %q", err, tc.message)
			}
		})
	}
}

func TestRouteMetrics(t *testing.T) {
	route := func(sm v1beta1.ScalingMetricSpec) *v1beta1.InterceptorRoute {
		r := &v1beta1.InterceptorRoute{Spec: v1beta1.InterceptorRouteSpec{ScalingMetric: sm}}
		r.Name = "shop"
		return r
	}
	tests := []struct {
		name  string
		route *v1beta1.InterceptorRoute
		want  []Metric
	}{
		{"concurrency alone is one metric named as the add-on names it",
			route(v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 4}}),
			[]Metric{{Name: "http_shop_concurrency", Target: 4}}},
		{"a request rate alone is one rate metric",
			route(v1beta1.ScalingMetricSpec{RequestRate: &v1beta1.RequestRateTargetSpec{TargetValue: 20}}),
			[]Metric{{Name: "http_shop_rate", Rate: true, Target: 20}}},
		{"both give two metrics, concurrency first",
			route(v1beta1.ScalingMetricSpec{Concurrency: &v1beta1.ConcurrencyTargetSpec{TargetValue: 4}, RequestRate: &v1beta1.RequestRateTargetSpec{TargetValue: 20}}),
			[]Metric{{Name: "http_shop_concurrency", Target: 4}, {Name: "http_shop_rate", Rate: true, Target: 20}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RouteMetrics(tt.route); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RouteMetrics = %+v, want %+v", got, tt.want)
			}
		})
	}
}
