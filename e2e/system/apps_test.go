//go:build e2e

package system

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/internal/stream"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// scaledObjectGVK is KEDA's ScaledObject.
var scaledObjectGVK = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}

// testNamespace creates a namespace for t, deleted (with everything in it) when t ends; on failure
// the cluster's logs are printed first.
func testNamespace(t *testing.T) string {
	t.Helper()
	c := framework.SuiteCluster(t)
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	name = strings.Trim(name[:min(len(name), 40)], "-") + "-" + randomSuffix()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), ns) })
	c.DumpLogsIfFailed(t)
	return name
}

// randomSuffix returns six random hex digits, to tell apart the names of objects and processes
// that outlive a test or share a namespace with others.
func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// appSpec describes a sample app behind an HTTPScaledObject.
type appSpec struct {
	name string
	// env of the echo container (STARTUP_DELAY, RESPONSE_DELAY, GRPC_PORT, ...).
	env map[string]string
	// replicas is the Deployment's initial replica count (0: scaled to zero).
	replicas int32
	// portName, when set, names the Service port (h2c or grpc for HTTP/2 apps).
	portName string
	// targetPort is the container port the Service targets; 0 means the HTTP port, 8080.
	targetPort int32
	// hso fills in the routing and scaling of the HTTPScaledObject; scaleTargetRef is set.
	hso v1alpha1.HTTPScaledObjectSpec
	// tlsSecret, when set, has the app serve HTTPS with the key pair of that Secret of its
	// namespace, behind a Service port with appProtocol https.
	tlsSecret string
	// plain deploys the app without an HTTPScaledObject (a failover Service, say), and waits
	// for its replicas to be ready.
	plain bool
}

// app is a deployed sample app.
type app struct {
	ns, name string
}

// key is the app's route key, namespace/name.
func (a *app) key() string { return a.ns + "/" + a.name }

// deployApp creates the app's Deployment, Service and HTTPScaledObject in ns and waits until
// every interceptor routes it and KEDA has taken the ScaledObject over (its HPA exists).
func deployApp(t *testing.T, ns string, s appSpec) *app {
	t.Helper()
	ctx := t.Context()
	c := suite.cluster
	dep, svc := apps.Echo{
		Namespace: ns, Name: s.name, Replicas: s.replicas, Env: s.env,
		ServicePortName: s.portName, TargetPort: s.targetPort, TLSSecret: s.tlsSecret,
	}.Objects()
	spec := s.hso
	spec.ScaleTargetRef = v1alpha1.ScaleTargetRef{Name: s.name, Kind: "Deployment", APIVersion: "apps/v1", Service: s.name, Port: 80}
	if spec.Replicas == nil {
		spec.Replicas = &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](3)}
	}
	if spec.CooldownPeriod == nil {
		spec.CooldownPeriod = ptr.To[int32](300)
	}
	hso := &v1alpha1.HTTPScaledObject{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: ns}, Spec: spec}
	objs := []client.Object{dep, svc, hso}
	if s.plain {
		objs = objs[:2]
	}
	for _, o := range objs {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, s.name, err)
		}
	}
	a := &app{ns: ns, name: s.name}
	if s.plain {
		a.waitReady(t, s.replicas)
		return a
	}
	waitRouting(t, a.key(), 30*time.Second)
	if err := poll.Until(t.Context(), 60*time.Second, "KEDA to create the HPA of "+a.key(), func() error {
		var hpa unstructured.Unstructured
		hpa.SetGroupVersionKind(schema.GroupVersionKind{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"})
		return c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keda-hpa-" + s.name}, &hpa)
	}); err != nil {
		t.Fatal(err)
	}
	return a
}

// replicas returns the app's Deployment replicas: desired and ready.
func (a *app) replicas(ctx context.Context) (desired, ready int32, err error) {
	var dep appsv1.Deployment
	if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: a.name}, &dep); err != nil {
		return 0, 0, err
	}
	return ptr.Deref(dep.Spec.Replicas, 1), dep.Status.ReadyReplicas, nil
}

// waitReady waits up to a minute until at least n replicas of the app are ready.
func (a *app) waitReady(t *testing.T, n int32) {
	t.Helper()
	if err := poll.Until(t.Context(), time.Minute, "the replicas of "+a.key()+" to be ready", func() error {
		_, ready, err := a.replicas(t.Context())
		if err == nil && ready < n {
			err = fmt.Errorf("%d of %d ready", ready, n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// waitRouting waits until every interceptor of the release has a route for key (namespace/name):
// the operator's route reached each one's watch.
func waitRouting(t *testing.T, key string, timeout time.Duration) {
	t.Helper()
	waitRoutingOn(t, suite.lobby.Instances("interceptor"), key, timeout)
}

// waitRoutingOn waits until each of the interceptors has a route for key.
func waitRoutingOn(t *testing.T, interceptors []*deploy.Instance, key string, timeout time.Duration) {
	t.Helper()
	if err := poll.Until(t.Context(), timeout, "every interceptor to route "+key, func() error {
		for _, in := range interceptors {
			q, err := queue(in.URL("admin"))
			if err != nil {
				return err
			}
			if _, ok := q[key]; !ok {
				return fmt.Errorf("%s does not route %s yet", in.Process.Name, key)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// queue reads an interceptor's /queue, as the release's scalers may, through the framework's
// admin helper.
func queue(adminURL string) (map[string]stream.RouteCounts, error) {
	return suite.lobby.Admin.Queue(context.Background(), adminURL)
}

// response is what a client got.
type response struct {
	code   int
	body   string
	header http.Header
	err    error
	at     time.Time
}

// client sends the suite's requests; it does not follow redirects and waits long enough for any
// cold start.
var httpClient = &http.Client{
	Timeout:   90 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256},
}

// send sends one request through the ingress with the Host header host.
func send(ctx context.Context, method, url, host string, header http.Header) response {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return response{err: err}
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return response{err: err, at: time.Now()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, body: string(body), header: resp.Header, err: err, at: time.Now()}
}

// sendMany sends n concurrent requests and returns their responses.
func sendMany(ctx context.Context, n int, url, host string) []response {
	out := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = send(ctx, http.MethodGet, url, host, nil) })
	}
	wg.Wait()
	return out
}

// echoed is the echo app's answer to /.
type echoed struct {
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
	PodName string              `json:"podName"`
}
