package framework

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/kubelet"
	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// readyTimeout bounds how long Start waits for any one component to become ready.
const readyTimeout = 60 * time.Second

// fieldOwner is the server-side apply field manager of everything the harness applies.
const fieldOwner = "lobby-e2e"

// NodeName is the name of the node the process kubelet registers.
const NodeName = "lobby-e2e-node"

// PodCIDR is where the process kubelet allocates pod addresses (from 10.244.1.0 up).
var PodCIDR = netip.MustParsePrefix("10.244.0.0/16")

// ServiceCIDR is the Service cluster-IP range. Nothing routes it (there is no kube-proxy):
// clients inside the namespace reach pods by their addresses.
const ServiceCIDR = "10.96.0.0/16"

// errGaveUp, wrapped in a check's error, makes waitFor return at once: waiting longer cannot
// help.
var errGaveUp = errors.New("gave up")

// waitFor awaits check for up to readyTimeout. It returns at once when the process p (if any)
// exits, with the end of its log, or when check's error wraps errGaveUp.
func waitFor(ctx context.Context, what string, p *Process, check func(context.Context) error) error {
	ctx, gaveUp := context.WithCancelCause(ctx)
	defer gaveUp(nil)
	if p != nil {
		var release context.CancelFunc
		ctx, release = p.WhileRunning(ctx)
		defer release()
	}
	// The deadline bounds a check that hangs too (a request to a server that accepts and never
	// answers).
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return poll.Until(ctx, readyTimeout, what+" to be ready", func() error {
		err := check(ctx)
		if errors.Is(err, errGaveUp) {
			gaveUp(err)
		}
		return err
	})
}

// logTail returns the last n lines of the file, or why it could not be read.
func logTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// httpReady returns a check that GETs url with client and wants 200.
func httpReady(hc *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		return nil
	}
}

// tlsClient returns an HTTP client that trusts caFile and presents cert, when set.
func tlsClient(caFile string, cert keyPair) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA %s: no certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert.certFile != "" {
		pair, err := tls.LoadX509KeyPair(cert.certFile, cert.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

func (c *Cluster) start(name, binary string, args, env []string) (*Process, error) {
	path, err := binPath(c.binDir, binary)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(name, path, args, env, c.LogDir)
	if err != nil {
		return nil, err
	}
	c.addProcess(p)
	return p, nil
}

// startEtcd runs etcd on the control-plane address. Its data lives in /dev/shm when there is
// one: the API server's bootstrap writes hundreds of objects, each fsynced.
func (c *Cluster) startEtcd(ctx context.Context) error {
	cp := netns.ControlPlaneAddr
	clientPort, err := freePort(cp)
	if err != nil {
		return err
	}
	peerPort, err := freePort(cp)
	if err != nil {
		return err
	}
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	if c.etcdDir, err = os.MkdirTemp(base, "lobby-e2e-etcd-"); err != nil {
		return fmt.Errorf("create etcd data folder: %w", err)
	}
	clientURL := "http://" + hostPort(cp, clientPort)
	peerURL := "http://" + hostPort(cp, peerPort)
	c.etcdURL = clientURL
	// Kept for RestartEtcd. On an existing data folder etcd ignores the --initial-* flags.
	c.etcdArgs = []string{
		"--name=lobby-e2e",
		"--data-dir=" + c.etcdDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=lobby-e2e=" + peerURL,
		"--initial-cluster-state=new",
		"--log-level=warn",
		"--logger=zap",
	}
	p, err := c.start("etcd", "etcd", c.etcdArgs, nil)
	if err != nil {
		return err
	}
	c.etcd = p
	return waitFor(ctx, "etcd", p, c.etcdReady())
}

// etcdReady returns a check that wants etcd's /health to answer 200.
func (c *Cluster) etcdReady() func(context.Context) error {
	return httpReady(&http.Client{Timeout: 2 * time.Second}, c.etcdURL+"/health")
}

// startAPIServer runs kube-apiserver and waits for /readyz; then it writes the admin
// kubeconfig and builds the clients.
func (c *Cluster) startAPIServer(ctx context.Context) error {
	cp := netns.ControlPlaneAddr
	port, err := freePort(cp)
	if err != nil {
		return err
	}
	c.APIServerURL = "https://" + hostPort(cp, port)
	pk := c.pki
	// Kept for StartAPIServer, which starts it again on the same address.
	c.apiServerArgs = []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=" + cp.String(),
		"--advertise-address=" + cp.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + pk.apiserver.certFile,
		"--tls-private-key-file=" + pk.apiserver.keyFile,
		"--client-ca-file=" + pk.ca.certFile,
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pk.saPub,
		"--service-account-signing-key-file=" + pk.saKey,
		"--requestheader-client-ca-file=" + pk.frontProxyCA.certFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pk.frontProxyClient.certFile,
		"--proxy-client-key-file=" + pk.frontProxyClient.keyFile,
		// No kube-proxy: the aggregator must dial an extension server's endpoint address,
		// not its Service's cluster IP.
		"--enable-aggregator-routing=true",
		"--profiling=false",
	}
	hc, err := tlsClient(pk.ca.certFile, pk.admin)
	if err != nil {
		return err
	}
	c.apiServerReady = httpReady(hc, c.APIServerURL+"/readyz")
	p, err := c.start("kube-apiserver", "kube-apiserver", c.apiServerArgs, nil)
	if err != nil {
		return err
	}
	c.apiServer = p
	if err := waitFor(ctx, "kube-apiserver", p, c.apiServerReady); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.Kubeconfig, "admin", pk.admin, ""); err != nil {
		return err
	}
	if c.RESTConfig, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	// Tests create and poll many objects; client-go's default 5 QPS would throttle them.
	c.RESTConfig.QPS, c.RESTConfig.Burst = 200, 400
	if c.Kube, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return fmt.Errorf("build clientset: %w", err)
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	if c.Client, err = client.New(c.RESTConfig, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("build controller-runtime client: %w", err)
	}
	return nil
}

// controllers are the controllers kube-controller-manager runs: what Deployments, Services,
// namespaces, service accounts and HPAs need, and nothing for nodes, volumes or jobs. The root CA
// publisher writes the kube-root-ca.crt ConfigMap every namespace has: the service-account
// token volume of a pod on the real node (e2e/node) projects it.
var controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"endpointslice-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"horizontal-pod-autoscaler-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"pod-garbage-collector-controller",
	"root-ca-certificate-publisher-controller",
}

// startControllerManager runs kube-controller-manager and waits for its /healthz.
func (c *Cluster) startControllerManager(ctx context.Context) error {
	cp := netns.ControlPlaneAddr
	pk := c.pki
	port, err := freePort(cp)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	if err := c.writeKubeconfig(kubeconfig, "system:kube-controller-manager", pk.controllerManager, ""); err != nil {
		return err
	}
	p, err := c.start("kube-controller-manager", "kube-controller-manager", []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=" + cp.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + pk.controllerManagerServing.certFile,
		"--tls-private-key-file=" + pk.controllerManagerServing.keyFile,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + pk.saKey,
		"--root-ca-file=" + pk.ca.certFile,
		"--leader-elect=false",
		// Tests should see the HPA act within seconds, not the default 15s.
		"--horizontal-pod-autoscaler-sync-period=2s",
		"--profiling=false",
	}, nil)
	if err != nil {
		return err
	}
	hc, err := tlsClient(pk.ca.certFile, keyPair{})
	if err != nil {
		return err
	}
	return waitFor(ctx, "kube-controller-manager", p, httpReady(hc, "https://"+hostPort(cp, port)+"/healthz"))
}

// installCRDs applies lobby's and KEDA's CRDs with server-side apply (KEDA's are too large for
// the last-applied annotation of client-side apply) and waits until they are established.
func (c *Cluster) installCRDs(ctx context.Context) error {
	kedaCRDs, err := c.kedaCRDDir()
	if err != nil {
		return err
	}
	var files []string
	for _, dir := range []string{filepath.Join(c.root, "config", "crd"), kedaCRDs} {
		matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil || len(matches) == 0 {
			return fmt.Errorf("find CRDs: no YAML file in %s", dir)
		}
		files = append(files, matches...)
	}
	var names []string
	for _, file := range files {
		objs, err := readManifests(file)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if obj.GetKind() != "CustomResourceDefinition" {
				return fmt.Errorf("install CRDs: %s holds a %s, not a CustomResourceDefinition", file, obj.GetKind())
			}
			if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
				client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply CRD %s from %s: %w", obj.GetName(), file, err)
			}
			names = append(names, obj.GetName())
		}
	}
	for _, name := range names {
		err := waitFor(ctx, "CRD "+name, nil, func(ctx context.Context) error {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return errors.New("not established yet")
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// kedaCRDDir returns the folder of KEDA's CRDs: keda-crds beside the bin folder, where
// `make tools` copies them, else KEDA's module in the Go module cache.
func (c *Cluster) kedaCRDDir() (string, error) {
	dir := filepath.Join(c.binDir, "..", "keda-crds")
	if m, _ := filepath.Glob(filepath.Join(dir, "*.yaml")); len(m) > 0 {
		return dir, nil
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2")
	cmd.Dir = filepath.Join(c.root, "e2e", "tools")
	out, err := cmd.Output()
	if mod := strings.TrimSpace(string(out)); err == nil && mod != "" {
		return filepath.Join(mod, "config", "crd", "bases"), nil
	}
	return "", fmt.Errorf("find KEDA's CRDs: none in %s and KEDA's module is not downloaded; run `make tools`", dir)
}

// readManifests decodes every object in a (multi-document) YAML file.
func readManifests(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode %s: %w", file, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// kedaNamespace is where KEDA's objects (Services, leases) live, as in KEDA's own manifests.
const kedaNamespace = "keda"

// kedaEnv is the environment KEDA's binaries read in place of the downward API and the
// service-account mount.
func kedaEnv(kubeconfig, podName string) []string {
	return []string{
		"KUBECONFIG=" + kubeconfig,
		"WATCH_NAMESPACE=",
		"POD_NAMESPACE=" + kedaNamespace,
		"POD_NAME=" + podName,
		"KEDA_CLUSTER_OBJECT_NAMESPACE=" + kedaNamespace,
	}
}

// startKEDAOperator creates the keda namespace and runs the KEDA operator with a certificate
// folder of its own (no rotation) and its servers on the control-plane address.
func (c *Cluster) startKEDAOperator(ctx context.Context) error {
	cp := netns.ControlPlaneAddr
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kedaNamespace}}
	if err := c.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", kedaNamespace, err)
	}
	kubeconfig := filepath.Join(c.Dir, "keda.kubeconfig")
	if err := c.writeKubeconfig(kubeconfig, "keda", c.pki.kedaClient, ""); err != nil {
		return err
	}
	c.kedaKubeconfig = kubeconfig
	var ports [3]int
	for i := range ports {
		port, err := freePort(cp)
		if err != nil {
			return err
		}
		ports[i] = port
	}
	healthAddr := hostPort(cp, ports[1])
	c.kedaMetricsServiceAddr = hostPort(cp, ports[2])
	p, err := c.start("keda-operator", "keda-operator", []string{
		"--metrics-bind-address=" + hostPort(cp, ports[0]),
		"--health-probe-bind-address=" + healthAddr,
		"--metrics-service-bind-address=" + c.kedaMetricsServiceAddr,
		"--cert-dir=" + c.pki.kedaDir,
		"--ca-dir=" + c.pki.kedaDir,
		"--enable-cert-rotation=false",
		"--enable-webhook-patching=false",
		"--enable-apiservice-patching=false",
		"--leader-elect=false",
		"--zap-encoder=console",
	}, kedaEnv(kubeconfig, "keda-operator"))
	if err != nil {
		return err
	}
	return waitFor(ctx, "keda-operator", p, httpReady(&http.Client{Timeout: 2 * time.Second}, "http://"+healthAddr+"/readyz"))
}

// kedaAdapterService is the Service the external metrics APIService points at, as in KEDA's
// manifests.
const kedaAdapterService = "keda-metrics-apiserver"

// startKEDAAdapter runs the KEDA metrics adapter on its own address, publishes it as
// keda/keda-metrics-apiserver through a hand-written EndpointSlice (nothing here runs it as a
// pod), registers it as v1beta1.external.metrics.k8s.io and waits until the aggregator marks
// that APIService Available.
func (c *Cluster) startKEDAAdapter(ctx context.Context, addr netip.Addr) error {
	port, err := freePort(addr)
	if err != nil {
		return err
	}
	// The adapter's own /metrics listens on every address of the namespace at this port.
	metricsPort, err := freePort(netip.IPv4Unspecified())
	if err != nil {
		return err
	}
	kedaDir := c.pki.kedaDir
	p, err := c.start("keda-adapter", "keda-adapter", []string{
		"--bind-address=" + addr.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + kedaDir,
		"--tls-cert-file=" + filepath.Join(kedaDir, "tls.crt"),
		"--tls-private-key-file=" + filepath.Join(kedaDir, "tls.key"),
		"--client-ca-file=" + c.pki.ca.certFile,
		"--authentication-kubeconfig=" + c.kedaKubeconfig,
		"--authorization-kubeconfig=" + c.kedaKubeconfig,
		"--lister-kubeconfig=" + c.kedaKubeconfig,
		"--metrics-service-address=" + c.kedaMetricsServiceAddr,
		"--port=" + strconv.Itoa(metricsPort),
		"--zap-encoder=console",
	}, kedaEnv(c.kedaKubeconfig, "keda-adapter"))
	if err != nil {
		return err
	}
	if err := c.publishAdapter(ctx, addr, port); err != nil {
		return err
	}
	return waitFor(ctx, "keda-adapter", p, func(ctx context.Context) error {
		svc := &unstructured.Unstructured{}
		svc.SetAPIVersion("apiregistration.k8s.io/v1")
		svc.SetKind("APIService")
		if err := c.Client.Get(ctx, client.ObjectKey{Name: externalMetricsAPIService}, svc); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(svc.Object, "status", "conditions")
		for _, raw := range conds {
			cond, _ := raw.(map[string]any)
			if cond["type"] == "Available" {
				if cond["status"] == "True" {
					return nil
				}
				return fmt.Errorf("APIService %s not available: %v: %v", externalMetricsAPIService, cond["reason"], cond["message"])
			}
		}
		return fmt.Errorf("APIService %s has no Available condition yet", externalMetricsAPIService)
	})
}

// externalMetricsAPIService is the APIService that serves the external metrics API.
const externalMetricsAPIService = "v1beta1.external.metrics.k8s.io"

// publishAdapter creates the adapter's Service, its EndpointSlice and the APIService.
func (c *Cluster) publishAdapter(ctx context.Context, addr netip.Addr, port int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: kedaAdapterService, Namespace: kedaNamespace},
		Spec: corev1.ServiceSpec{
			// No selector: the EndpointSlice below is written by hand.
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(int32(port))}},
		},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", kedaNamespace, kedaAdapterService, err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: kedaAdapterService, Namespace: kedaNamespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: kedaAdapterService, discoveryv1.LabelManagedBy: fieldOwner},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if err := c.Client.Create(ctx, slice); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", kedaNamespace, kedaAdapterService, err)
	}
	ca, err := os.ReadFile(c.pki.kedaCA.certFile)
	if err != nil {
		return fmt.Errorf("read KEDA CA: %w", err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": externalMetricsAPIService},
		"spec": map[string]any{
			"group":                "external.metrics.k8s.io",
			"version":              "v1beta1",
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
			"caBundle":             ca,
			"service":              map[string]any{"name": kedaAdapterService, "namespace": kedaNamespace, "port": int64(443)},
		},
	}}
	if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(apiService),
		client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply APIService %s: %w", externalMetricsAPIService, err)
	}
	return nil
}

// startKubelet starts the process kubelet, which runs the sample apps prebuilt.Prepare built.
func (c *Cluster) startKubelet(ctx context.Context) error {
	images, err := prebuilt.Apps()
	if err != nil {
		return err
	}
	c.Images = images
	logFile, err := os.OpenFile(filepath.Join(c.LogDir, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open kubelet log: %w", err)
	}
	k, err := kubelet.New(kubelet.Options{
		Client:   c.Kube,
		NodeName: NodeName,
		PodCIDR:  PodCIDR,
		Images:   images,
		LogDir:   filepath.Join(c.LogDir, "pods"),
		Log:      logFile,
	})
	if err != nil {
		_ = logFile.Close()
		return err
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- k.Start(kctx) }()
	c.onStop(func() error {
		cancel()
		err := <-done
		_ = logFile.Close()
		if err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
		return nil
	})
	return waitFor(ctx, "kubelet", nil, func(ctx context.Context) error {
		select {
		case err := <-done:
			done <- err // for the stop function
			return fmt.Errorf("%w: the kubelet stopped: %v", errGaveUp, err)
		default:
		}
		node, err := c.Kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not Ready yet")
	})
}
