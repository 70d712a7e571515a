package v1beta1_test

import (
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/operator/api/v1beta1"
	"github.com/lobby-http/lobby/operator/internal/testenv"
)

// startAPIServer starts kube-apiserver and etcd with lobby's CRDs and returns a client of it, or
// skips the test when they are not available.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	cfg := testenv.Start(t, testenv.Options{})
	c, _ := testenv.Client(t, cfg, v1beta1.AddToScheme)
	return c
}

// route returns an InterceptorRoute with the given spec YAML, as a user would write it.
func route(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	doc := "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\nmetadata: {namespace: default, name: " + name + "}\nspec:\n" + spec
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return u
}

const (
	target = "  target: {service: app, port: 8080}\n"
	metric = "  scalingMetric: {concurrency: {targetValue: 10}}\n"
)

func TestAPIServerAcceptsInterceptorRoutesOfEveryShape(t *testing.T) {
	c := startAPIServer(t)
	tests := []struct {
		name string
		spec string
	}{
		{"a route with only a target and a metric is the catch-all", target + metric},
		{"a target may name its port", "  target: {service: app, portName: http}\n" + metric},
		{"rules match hosts, paths and headers", target + metric + `  rules:
  - hosts: [shop.example.com, "*.example.org", "*"]
    paths: [{value: /api}, {value: cart}]
    headers: [{name: X-Canary, value: "1"}, {name: X-Present}]
  - {}
`},
		{"both metrics at once are allowed", target + `  scalingMetric:
    concurrency: {targetValue: 5}
    requestRate: {targetValue: 20, window: 2m, granularity: 2s}
`},
		{"a request rate alone takes the default window", target + "  scalingMetric: {requestRate: {targetValue: 3}}\n"},
		{"a fallback Service by port name", target + metric + "  coldStart: {fallback: {service: {name: sorry, portName: http}}}\n"},
		{"a placeholder with an inline body and headers", target + metric + `  coldStart:
    placeholder: {response: {statusCode: 202, body: "warming up", headers: {Retry-After: "2"}}}
`},
		{"a placeholder with a body from a ConfigMap", target + metric + `  coldStart:
    placeholder: {response: {bodyFromConfigMap: {name: pages, key: wait.html}}}
`},
		{"lobby's hold limits beside a placeholder", target + metric + `  coldStart:
    maxPendingRequests: 50
    overflow: Placeholder
    placeholder: {response: {body: busy}}
`},
		{"timeouts are durations, 0s included", target + metric + "  timeouts: {readiness: 45s, request: 0s, responseHeader: 1m30s}\n"},
		{"static routes in both modes", target + metric + `  staticRoutes:
  - rules: [{paths: [{value: /healthz}]}]
    response: {statusCode: 200, body: ok}
    responseMode: Always
  - rules: [{hosts: [shop.example.com], paths: [{value: /status}]}]
    response: {body: down, bodyFromConfigMap: null}
    responseMode: WhenUnavailable
  - rules: [{paths: [{value: /ping}]}]
    response: {statusCode: 204}
`},
		{"a cold-start mode alone", target + metric + "  coldStart: {mode: Auto}\n"},
		{"mode Hold beside a placeholder, which then answers only timed-out requests", target + metric + `  coldStart:
    mode: Hold
    placeholder: {response: {body: late}}
`},
		{"a waiting page from a ConfigMap", target + metric + `  coldStart:
    mode: Placeholder
    waitingPage: {bodyFromConfigMap: {name: pages}}
`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := route(t, "valid-"+string(rune('a'+i)), tt.spec)
			if err := c.Create(t.Context(), u); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}

	t.Run("a static route without a mode is WhenUnavailable, read back typed", func(t *testing.T) {
		var ir v1beta1.InterceptorRoute
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "valid-k"}, &ir); err != nil {
			t.Fatal(err)
		}
		if got := ir.Spec.StaticRoutes[2].ResponseMode; got != v1beta1.StaticRouteWhenUnavailable {
			t.Errorf("responseMode = %q, want WhenUnavailable", got)
		}
		if got := ir.Spec.StaticRoutes[0].ResponseMode; got != v1beta1.StaticRouteAlways {
			t.Errorf("responseMode = %q, want Always", got)
		}
	})
}

func TestAPIServerRefusesInvalidInterceptorRoutes(t *testing.T) {
	c := startAPIServer(t)
	tests := []struct {
		name string
		spec string
		// want are substrings of the refusal, which must name the field.
		want []string
	}{
		{"a target with both port and portName", "  target: {service: app, port: 80, portName: http}\n" + metric,
			[]string{"spec.target", "exactly one of 'port' or 'portName'"}},
		{"a target with neither port nor portName", "  target: {service: app}\n" + metric,
			[]string{"spec.target", "exactly one of 'port' or 'portName'"}},
		{"no target", metric, []string{"spec.target", "Required value"}},
		{"no scaling metric", target + "  scalingMetric: {}\n",
			[]string{"spec.scalingMetric", "at least one of 'concurrency' or 'requestRate'"}},
		{"a readiness timeout that is not a duration", target + metric + "  timeouts: {readiness: soon}\n",
			[]string{"spec.timeouts.readiness"}},
		{"a negative request timeout", target + metric + "  timeouts: {request: -5s}\n",
			[]string{"spec.timeouts.request"}},
		{"a response header timeout without a unit", target + metric + "  timeouts: {responseHeader: \"30\"}\n",
			[]string{"spec.timeouts.responseHeader"}},
		{"a rate window that is not a duration", target + "  scalingMetric: {requestRate: {targetValue: 1, window: a-minute}}\n",
			[]string{"spec.scalingMetric.requestRate.window"}},
		{"an empty static response mode", target + metric + `  staticRoutes:
  - rules: [{paths: [{value: /healthz}]}]
    response: {body: ok}
    responseMode: ""
`, []string{"spec.staticRoutes[0].responseMode", `Unsupported value: ""`}},
		{"an unknown static response mode", target + metric + `  staticRoutes:
  - rules: [{paths: [{value: /healthz}]}]
    response: {body: ok}
    responseMode: Sometimes
`, []string{"spec.staticRoutes[0].responseMode"}},
		{"a static route without rules", target + metric + "  staticRoutes: [{rules: [], response: {body: ok}}]\n",
			[]string{"spec.staticRoutes[0].rules"}},
		{"a response with both body and bodyFromConfigMap", target + metric + `  coldStart:
    placeholder: {response: {body: x, bodyFromConfigMap: {name: pages}}}
`, []string{"spec.coldStart.placeholder.response", "at most one of 'body' or 'bodyFromConfigMap'"}},
		{"a fallback with both port and portName", target + metric + "  coldStart: {fallback: {service: {name: s, port: 1, portName: x}}}\n",
			[]string{"spec.coldStart.fallback.service", "exactly one of 'port' or 'portName'"}},
		{"an unknown cold-start mode", target + metric + "  coldStart: {mode: Browser}\n",
			[]string{"spec.coldStart.mode", "supported values"}},
		{"an empty coldStart", target + metric + "  coldStart: {}\n",
			[]string{"spec.coldStart", "at least one of"}},
		{"overflow Placeholder without a placeholder", target + metric + "  coldStart: {maxPendingRequests: 3, overflow: Placeholder}\n",
			[]string{"spec.coldStart", "spec.coldStart.placeholder is required"}},
		{"a status code out of range", target + metric + "  coldStart: {placeholder: {response: {statusCode: 99}}}\n",
			[]string{"spec.coldStart.placeholder.response.statusCode"}},
		{"a response header value with a line break", target + metric + `  staticRoutes:
  - rules: [{}]
    response: {headers: {X-A: "a\nb"}}
`, []string{"spec.staticRoutes[0].response.headers", "line breaks"}},
		{"a hold queue above the maximum", target + metric + "  coldStart: {maxPendingRequests: 100001}\n",
			[]string{"spec.coldStart.maxPendingRequests", "less than or equal to 100000"}},
		{"a readiness timeout above an hour", target + metric + "  timeouts: {readiness: 90m}\n",
			[]string{"spec.timeouts", "spec.timeouts.readiness must be at most 1h"}},
		{"a response header timeout above an hour", target + metric + "  timeouts: {responseHeader: 3601s}\n",
			[]string{"spec.timeouts", "spec.timeouts.responseHeader must be at most 1h"}},
		{"a request timeout above a day", target + metric + "  timeouts: {request: 48h}\n",
			[]string{"spec.timeouts", "spec.timeouts.request must be at most 24h"}},
		{"a rate window above an hour", target + "  scalingMetric: {requestRate: {targetValue: 1, window: 3h}}\n",
			[]string{"spec.scalingMetric.requestRate", "window must be at most 1h"}},
		{"a target value above a million", target + "  scalingMetric: {concurrency: {targetValue: 1000001}}\n",
			[]string{"spec.scalingMetric.concurrency.targetValue", "less than or equal to 1000000"}},
		{"a header match without a name", target + metric + "  rules: [{headers: [{name: \"\"}]}]\n",
			[]string{"spec.rules[0].headers[0].name"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := route(t, "invalid-"+string(rune('a'+i)), tt.spec)
			err := c.Create(t.Context(), u)
			if err == nil {
				t.Fatal("accepted, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAPIServerAcceptsTheDocumentedExample(t *testing.T) {
	c := startAPIServer(t)
	raw, err := os.ReadFile("../../../docs/examples/interceptorroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	routes := 0
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("parse the example: %v", err)
		}
		if u.GetKind() != v1beta1.Kind {
			continue // KEDA's ScaledObject and the ConfigMap are not this API's.
		}
		u.SetNamespace("default")
		if err := c.Create(t.Context(), u); err != nil {
			t.Errorf("the documented InterceptorRoute is refused: %v", err)
		}
		routes++
	}
	if routes != 1 {
		t.Errorf("found %d InterceptorRoutes in the example, want 1", routes)
	}
}
