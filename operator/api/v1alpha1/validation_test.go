package v1alpha1_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lobby-http/lobby/operator/internal/testenv"
)

// startAPIServer starts kube-apiserver and etcd with lobby's CRDs and returns a client of it, or
// skips the test when they are not available.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	cfg := testenv.Start(t, testenv.Options{})
	c, _ := testenv.Client(t, cfg)
	return c
}

// manifest returns an HTTPScaledObject with a valid base spec and the given spec YAML merged over
// it, as a user would write it.
func manifest(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	base := `
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  namespace: default
  name: ` + name + `
spec:
  hosts: [app.example.com]
  scaleTargetRef: {name: app, service: app, port: 8080}
`
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(base), &u.Object); err != nil {
		t.Fatal(err)
	}
	overlay := map[string]any{}
	if err := yaml.Unmarshal([]byte(spec), &overlay); err != nil {
		t.Fatalf("parse spec of %s: %v", name, err)
	}
	s := u.Object["spec"].(map[string]any)
	for k, v := range overlay {
		if v == nil {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	return u
}

func TestAPIServerRefusesInvalidObjects(t *testing.T) {
	c := startAPIServer(t)
	tests := []struct {
		name string
		spec string
		// want are fragments the API server's message must contain: the field and what is wrong.
		want []string
	}{
		{"both port and portName are refused",
			`scaleTargetRef: {name: app, service: app, port: 8080, portName: http}`,
			[]string{"spec.scaleTargetRef", "must define either the 'portName' or the 'port'"}},
		{"neither port nor portName is refused",
			`scaleTargetRef: {name: app, service: app}`,
			[]string{"spec.scaleTargetRef", "must define either the 'portName' or the 'port'"}},
		{"a failover ref with both ports is refused",
			`coldStartTimeoutFailoverRef: {service: sorry, port: 80, portName: http}`,
			[]string{"spec.coldStartTimeoutFailoverRef", "must define either the 'portName' or the 'port'"}},
		{"a failover ref with no port is refused",
			`coldStartTimeoutFailoverRef: {service: sorry}`,
			[]string{"spec.coldStartTimeoutFailoverRef", "must define either the 'portName' or the 'port'"}},
		{"a minimum above the maximum is refused",
			`replicas: {min: 5, max: 2}`,
			[]string{"spec.replicas", "replicas.min must be less than or equal to replicas.max"}},
		{"a zero maximum is refused",
			`replicas: {max: 0}`,
			[]string{"spec.replicas.max", "greater than or equal to 1"}},
		{"a zero concurrency target is refused",
			`scalingMetric: {concurrency: {targetValue: 0}}`,
			[]string{"spec.scalingMetric.concurrency.targetValue", "greater than or equal to 1"}},
		{"a zero rate target is refused",
			`scalingMetric: {requestRate: {targetValue: 0, window: 1m, granularity: 1s}}`,
			[]string{"spec.scalingMetric.requestRate.targetValue", "greater than or equal to 1"}},
		{"a zero deprecated target is refused",
			`targetPendingRequests: 0`,
			[]string{"spec.targetPendingRequests", "greater than or equal to 1"}},
		{"a granularity below one second is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: 1m, granularity: 500ms}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.granularity must be at least 1s"}},
		{"a granularity longer than the window is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: 10s, granularity: 1m}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.granularity must not be longer than requestRate.window"}},
		{"a window that is not a duration is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: soon, granularity: 1s}}`,
			[]string{"spec.scalingMetric.requestRate.window", "should match"}},
		{"a wildcard in the middle of a host is refused",
			`hosts: ["*.*.com"]`,
			[]string{"spec.hosts[0]", "should match"}},
		{"an empty label in a host is refused",
			`hosts: [foo..com]`,
			[]string{"spec.hosts[0]", "should match"}},
		{"a host with spaces is refused",
			`hosts: [Host With Spaces]`,
			[]string{"spec.hosts[0]", "should match"}},
		{"a negative cold-start wait is refused",
			`timeouts: {conditionWait: -1s}`,
			[]string{"spec.timeouts.conditionWait", "should match"}},
		{"a zero failover timeout is refused",
			`coldStartTimeoutFailoverRef: {service: sorry, port: 80, timeoutSeconds: 0}`,
			[]string{"spec.coldStartTimeoutFailoverRef.timeoutSeconds", "greater than or equal to 1"}},
		{"concurrency and request rate together are refused",
			`scalingMetric: {concurrency: {targetValue: 10}, requestRate: {targetValue: 10, window: 1m, granularity: 1s}}`,
			[]string{"spec.scalingMetric", "scalingMetric.concurrency and scalingMetric.requestRate are mutually exclusive"}},
		{"an unknown cold-start mode is refused",
			`coldStart: {mode: Wait}`,
			[]string{"spec.coldStart.mode", "supported values", "Hold", "Placeholder", "Auto"}},
		{"a waiting page from a ConfigMap without a name is refused",
			`coldStart: {mode: Auto, waitingPage: {bodyFromConfigMap: {key: a.html}}}`,
			[]string{"spec.coldStart.waitingPage.bodyFromConfigMap.name", "Required value"}},
		{"a placeholder overflow without a placeholder is refused",
			`coldStart: {overflow: Placeholder}`,
			[]string{"spec.coldStart", "coldStart.placeholder is required when coldStart.overflow is Placeholder"}},
		{"an unknown overflow policy is refused",
			`coldStart: {overflow: Drop}`,
			[]string{"spec.coldStart.overflow", "supported values"}},
		{"a header name with a space is refused",
			`headers: [{name: "X Tenant"}]`,
			[]string{"spec.headers[0].name", "should match"}},
		{"a port out of range is refused",
			`scaleTargetRef: {name: app, service: app, port: 70000}`,
			[]string{"spec.scaleTargetRef.port", "less than or equal to 65535"}},
		{"more hosts than the maximum are refused",
			`hosts: ` + hostList(257),
			[]string{"spec.hosts", "must have at most 256 items"}},
		{"a host longer than a DNS name and a port is refused",
			`hosts: [` + strings.Repeat("a", 260) + `.com]`,
			[]string{"spec.hosts[0]", "may not be more than 261"}},
		{"a hold queue above the maximum is refused",
			`coldStart: {maxPendingRequests: 100001}`,
			[]string{"spec.coldStart.maxPendingRequests", "less than or equal to 100000"}},
		{"a condition wait above an hour is refused",
			`timeouts: {conditionWait: 61m}`,
			[]string{"spec.timeouts", "timeouts.conditionWait must be at most 1h"}},
		{"a response header timeout above an hour is refused",
			`timeouts: {responseHeader: 2h}`,
			[]string{"spec.timeouts", "timeouts.responseHeader must be at most 1h"}},
		{"a request timeout above a day is refused",
			`timeouts: {request: 25h}`,
			[]string{"spec.timeouts", "timeouts.request must be at most 24h"}},
		{"a failover timeout above an hour is refused",
			`coldStartTimeoutFailoverRef: {service: sorry, port: 80, timeoutSeconds: 3601}`,
			[]string{"spec.coldStartTimeoutFailoverRef.timeoutSeconds", "less than or equal to 3600"}},
		{"a rate window above an hour is refused",
			`scalingMetric: {requestRate: {targetValue: 5, window: 2h, granularity: 1s}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.window must be at most 1h"}},
		{"a target value above a million is refused",
			`scalingMetric: {concurrency: {targetValue: 1000001}}`,
			[]string{"spec.scalingMetric.concurrency.targetValue", "less than or equal to 1000000"}},
		{"a target of pending requests above a million is refused",
			`targetPendingRequests: 1000001`,
			[]string{"spec.targetPendingRequests", "less than or equal to 1000000"}},
		{"a negative response header timeout is refused",
			`timeouts: {responseHeader: -1s}`,
			[]string{"spec.timeouts.responseHeader", "should match"}},
		{"a port that is not a number is refused",
			`hosts: ["app.example.com:http"]`,
			[]string{"spec.hosts[0]", "should match"}},
		{"a host with characters outside host names is refused",
			`hosts: ["shop<script>.example.com"]`,
			[]string{"spec.hosts[0]", "should match"}},
		{"more path prefixes than the maximum are refused",
			`pathPrefixes: ` + pathList(257),
			[]string{"spec.pathPrefixes", "must have at most 256 items"}},
		{"a path prefix longer than the maximum is refused",
			`pathPrefixes: [/` + strings.Repeat("p", 1024) + `]`,
			[]string{"spec.pathPrefixes[0]", "may not be more than 1024"}},
		{"more headers than the maximum are refused",
			`headers: ` + headerList(33, 1),
			[]string{"spec.headers", "must have at most 32 items"}},
		{"a header value longer than the maximum is refused",
			`headers: ` + headerList(1, 4097),
			[]string{"spec.headers[0].value", "may not be more than 4096"}},
		{"a duration with an unknown unit is refused",
			`timeouts: {conditionWait: 2d}`,
			[]string{"spec.timeouts.conditionWait", "should match"}},
		{"a duration with spaces is refused",
			`timeouts: {responseHeader: "10 s"}`,
			[]string{"spec.timeouts.responseHeader", "should match"}},
		{"a duration beyond what a Go duration holds is refused",
			`timeouts: {request: 9999999999999h}`,
			[]string{"spec.timeouts", "timeouts.request must not be negative"}},
		{"a rate window beyond what a Go duration holds is refused",
			`scalingMetric: {requestRate: {targetValue: 10, window: 9999999999999h, granularity: 1s}}`,
			[]string{"spec.scalingMetric.requestRate", "requestRate.granularity must not be longer than requestRate.window"}},
		{"more placeholder headers than the maximum are refused",
			`coldStart: {placeholder: {headers: ` + placeholderHeaders(33) + `}}`,
			[]string{"spec.coldStart.placeholder.headers", "must have at most 32 items"}},
		{"a placeholder header name that is not an HTTP header name is refused",
			`coldStart: {placeholder: {headers: {"Bad Name": v}}}`,
			[]string{"spec.coldStart.placeholder.headers", "names must be HTTP header names"}},
		{"a placeholder header value with a line break is refused",
			`coldStart: {placeholder: {headers: {X-Note: "warm\r\nSet-Cookie: a=b"}}}`,
			[]string{"spec.coldStart.placeholder.headers[X-Note]", "values must not hold line breaks or other control characters"}},
		{"a placeholder header value with a NUL is refused",
			`coldStart: {placeholder: {headers: {X-Note: "a\0b"}}}`,
			[]string{"spec.coldStart.placeholder.headers[X-Note]", "values must not hold line breaks or other control characters"}},
		{"a placeholder header value longer than the maximum is refused",
			`coldStart: {placeholder: {headers: {X-Note: ` + strings.Repeat("v", 4097) + `}}}`,
			[]string{"spec.coldStart.placeholder.headers.X-Note", "may not be more than 4096"}},
		{"a placeholder body longer than the maximum is refused",
			`coldStart: {placeholder: {body: ` + strings.Repeat("b", 65537) + `}}`,
			[]string{"spec.coldStart.placeholder.body", "may not be more than 65536"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := manifest(t, "invalid-"+strconv.Itoa(i), tt.spec)
			err := c.Create(t.Context(), u)
			if err == nil {
				t.Fatalf("Create() succeeded, want the API server to refuse %s", tt.spec)
			}
			t.Logf("refused: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Create() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestAPIServerAcceptsValidObjects(t *testing.T) {
	c := startAPIServer(t)
	tests := []struct {
		name string
		spec string
	}{
		{"the minimal object is accepted", `{}`},
		{"a port name instead of a port is accepted", `scaleTargetRef: {name: app, service: app, portName: http}`},
		{"a catch-all object without hosts is accepted", `hosts: null`},
		{"a wildcard host and mixed case are accepted", `hosts: ["*.example.com", Shop.Example.COM]`},
		{"a rate with defaults for window and granularity is accepted", `scalingMetric: {requestRate: {targetValue: 5}}`},
		{"equal minimum and maximum are accepted", `replicas: {min: 3, max: 3}`},
		{"every bound at its maximum is accepted",
			`{coldStart: {maxPendingRequests: 100000}, timeouts: {conditionWait: 1h, responseHeader: 60m, request: 24h}, ` +
				`coldStartTimeoutFailoverRef: {service: sorry, port: 80, timeoutSeconds: 3600}, targetPendingRequests: 1000000, ` +
				`scalingMetric: {requestRate: {targetValue: 1000000, window: 1h, granularity: 1m}}}`},
		{"a placeholder overflow with a placeholder is accepted",
			`coldStart: {maxPendingRequests: 10, overflow: Placeholder, placeholder: {statusCode: 202, body: wait}}`},
		{"each cold-start mode is accepted", `coldStart: {mode: Auto}`},
		{"mode Placeholder without a placeholder (the waiting page) is accepted", `coldStart: {mode: Placeholder}`},
		{"a waiting page from a ConfigMap is accepted",
			`coldStart: {mode: Hold, waitingPage: {bodyFromConfigMap: {name: pages, key: wait.html}}}`},
		{"positive timeouts are accepted", `timeouts: {conditionWait: 20s, responseHeader: 1m30s, request: 5m}`},
		{"zero timeouts, the add-on's spelling of the global default, are accepted",
			`timeouts: {conditionWait: 0s, responseHeader: "0", request: 0ms}`},
		{"a host with a port, as the add-on accepts it, is accepted",
			`hosts: ["shop.example.org:8080", "*.example.org:443", "[2001:db8::1]:80", "a.example.org."]`},
		{"a path prefix without a leading slash, as the add-on accepts it, is accepted", `pathPrefixes: [api, "v1/users/"]`},
		{"exactly the maximum number of hosts is accepted", `hosts: ` + hostList(256)},
		{"exactly the maximum number of path prefixes is accepted", `pathPrefixes: ` + pathList(256)},
		{"the maximum number of headers with values of the maximum length is accepted", `headers: ` + headerList(32, 4096)},
		{"a request timeout of a day, the longest allowed, is accepted", `timeouts: {request: 24h}`},
		{"placeholder headers with tabs and non-ASCII text are accepted",
			`coldStart: {placeholder: {headers: {Refresh: "5", X-Note: "w\tarm · up", "X-O'Brien": "1"}}}`},
		{"placeholder header values of the maximum length are accepted",
			`coldStart: {placeholder: {headers: ` + placeholderHeaderValues(32, 4096) + `}}`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Create(t.Context(), manifest(t, "valid-"+strconv.Itoa(i), tt.spec)); err != nil {
				t.Errorf("Create() error = %v, want the object accepted", err)
			}
		})
	}
}

// hostList returns n distinct host names as a YAML flow list.
func hostList(n int) string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%03d.example.com", i)
	}
	return "[" + strings.Join(hosts, ", ") + "]"
}

// pathList returns n distinct path prefixes as a YAML flow list.
func pathList(n int) string {
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("/p%03d", i)
	}
	return "[" + strings.Join(paths, ", ") + "]"
}

// headerList returns n distinct route headers, each with a value of valueLen bytes, as a YAML
// flow list.
func headerList(n, valueLen int) string {
	headers := make([]string, n)
	for i := range headers {
		headers[i] = fmt.Sprintf("{name: X-H%02d, value: %s}", i, strings.Repeat("v", valueLen))
	}
	return "[" + strings.Join(headers, ", ") + "]"
}

// placeholderHeaders returns n distinct response headers as a YAML flow map.
// placeholderHeaderValues returns n placeholder headers whose values are size bytes long.
func placeholderHeaderValues(n, size int) string {
	headers := make([]string, n)
	for i := range headers {
		headers[i] = fmt.Sprintf("X-H%02d: %s", i, strings.Repeat("v", size))
	}
	return "{" + strings.Join(headers, ", ") + "}"
}

func placeholderHeaders(n int) string {
	headers := make([]string, n)
	for i := range headers {
		headers[i] = fmt.Sprintf("X-H%02d: v", i)
	}
	return "{" + strings.Join(headers, ", ") + "}"
}

func TestAPIServerAcceptsTheWaitingRoomExample(t *testing.T) {
	c := startAPIServer(t)
	raw, err := os.ReadFile("../../../docs/examples/waitingroom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objects := 0
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("parse the example: %v", err)
		}
		if u.GetKind() != "HTTPScaledObject" {
			continue // the ConfigMap is core's
		}
		u.SetNamespace("default")
		if err := c.Create(t.Context(), u); err != nil {
			t.Errorf("the documented HTTPScaledObject is refused: %v", err)
		}
		objects++
	}
	if objects != 1 {
		t.Errorf("found %d HTTPScaledObjects in the example, want 1", objects)
	}
}
