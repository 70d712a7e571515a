// Package deploy installs lobby into a local e2e cluster the way its Helm chart installs it into a
// real one. The chart is rendered; every object but the Deployments is applied with server-side
// apply; and each Deployment's container runs as a local process with the arguments, environment,
// ports, probes and service account the rendered chart gives it — the chart is the only copy of
// that configuration.
//
// Two things differ from a cluster, because the processes are not pods:
//   - Every process gets its own address on the network namespace's loopback device, and a
//     listen address of the form ":port" in the chart becomes "<that address>:port" (the
//     processes share one network namespace, so wildcard binds would collide).
//   - Nothing publishes the processes as endpoints, so deploy writes the EndpointSlices of the
//     chart's Services itself (an endpoint turns ready once its readiness probe passes), and
//     answers the Services' DNS names through /etc/hosts, bind-mounted privately in the test's
//     mount namespace, so that KEDA reaches the scaler by the address the chart gives the
//     operator.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/chart"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/hosts"
)

// Components are lobby's binaries, in the order Install starts them: a scaler is ready only once
// it has an interceptor's counts, so interceptors come first.
var Components = []string{"interceptor", "scaler", "operator"}

// fieldManager is the server-side apply field manager of everything deploy writes.
const fieldManager = "lobby-e2e-deploy"

// managedBy is the endpointslice.kubernetes.io/managed-by value of deploy's EndpointSlices, so the
// EndpointSlice controller leaves them alone.
const managedBy = "lobby-e2e-deploy"

// Options says how to install lobby.
type Options struct {
	// Release is the Helm release name; empty means "lobby".
	Release string
	// Namespace is the release namespace; empty means "lobby".
	Namespace string
	// ValuesFiles and Set are passed to the chart as `helm template` takes them.
	ValuesFiles []string
	Set         map[string]string
	// Replicas overrides the number of processes of a component; a component not in the map gets
	// the Deployment's replicas from the chart (one when an autoscaler owns it).
	Replicas map[string]int
	// Ready bounds the wait for each process's readiness probe; zero means 60 s.
	Ready time.Duration
}

// Instance is one running process of a component.
type Instance struct {
	// Component is interceptor, scaler or operator.
	Component string
	// Process is the running process.
	Process *framework.Process
	// Addr is its address.
	Addr netip.Addr
	// Ports are its container ports by name, as the chart declares them.
	Ports map[string]int32
}

// URL returns "http://<addr>:<port>" for the named port.
func (i *Instance) URL(port string) string {
	return "http://" + netip.AddrPortFrom(i.Addr, uint16(i.Ports[port])).String()
}

// Lobby is an installed release.
type Lobby struct {
	// Release and Namespace of the installation.
	Release, Namespace string
	// Rendered is the rendered chart.
	Rendered *chart.Rendered
	// Admin reads the interceptors' admin API as the release's scalers do: with a token of the
	// scaler's ServiceAccount issued for the audience the chart configures.
	Admin *framework.Admin

	c     *framework.Cluster
	specs map[string]chart.ProcessSpec
	bins  map[string]string
	ready time.Duration

	mu        sync.Mutex
	instances map[string][]*Instance
	serial    map[string]int
}

// Install renders the chart, applies it and starts every component, returning once each process
// passes its readiness probe and is published in its Services' EndpointSlices.
func Install(ctx context.Context, c *framework.Cluster, o Options) (*Lobby, error) {
	if o.Release == "" {
		o.Release = "lobby"
	}
	if o.Namespace == "" {
		o.Namespace = "lobby"
	}
	if o.Ready == 0 {
		o.Ready = 60 * time.Second
	}
	r, err := chart.Render(ctx, o.Release, o.Namespace, o.ValuesFiles, o.Set)
	if err != nil {
		return nil, err
	}
	l := &Lobby{
		Release: o.Release, Namespace: o.Namespace, Rendered: r, c: c,
		specs: map[string]chart.ProcessSpec{}, bins: map[string]string{}, ready: o.Ready,
		instances: map[string][]*Instance{}, serial: map[string]int{},
	}
	if err := l.apply(ctx); err != nil {
		return nil, err
	}
	for _, comp := range Components {
		spec, err := r.Process(comp)
		if err != nil {
			return nil, err
		}
		if len(spec.Mounts) > 0 {
			return nil, fmt.Errorf("install %s: the chart mounts Secrets %v, which Install does not write out; leave TLS off in the release's values and run a TLS process with StartVariant", comp, spec.Mounts)
		}
		l.specs[comp] = spec
		if l.bins[comp], err = c.Build(ctx, "./"+comp); err != nil {
			return nil, err
		}
	}
	scalerSA := o.Namespace + "/" + l.specs["scaler"].ServiceAccount
	if l.Admin, err = c.AdminFor(ctx, scalerSA, l.specs["interceptor"].Env["LOBBY_ADMIN_TOKEN_AUDIENCE"]); err != nil {
		return nil, err
	}
	for _, comp := range Components {
		n, ok := o.Replicas[comp]
		if !ok {
			n = max(int(l.specs[comp].Replicas), 1)
		}
		for range n {
			if _, err := l.Start(ctx, comp); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// apply applies every rendered object but the Deployments (run as processes), and those whose
// API the local cluster lacks (the Prometheus Operator's), with server-side apply.
func (l *Lobby) apply(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l.Namespace}}
	if err := l.c.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", l.Namespace, err)
	}
	for _, obj := range l.Rendered.Objects {
		if obj.GetKind() == "Deployment" || chart.ForPrometheusOperator(obj) {
			continue
		}
		if err := l.c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()),
			client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}

// Instances returns the running processes of component, oldest first.
func (l *Lobby) Instances(component string) []*Instance {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.instances[component])
}

// Start starts one more process of component, waits for its readiness probe and publishes it.
func (l *Lobby) Start(ctx context.Context, component string) (*Instance, error) {
	spec, ok := l.specs[component]
	if !ok {
		return nil, fmt.Errorf("start %q: not a component; components are %v", component, Components)
	}
	l.mu.Lock()
	name := fmt.Sprintf("%s-%s-%d", l.Release, component, l.serial[component])
	l.serial[component]++
	l.mu.Unlock()
	in, err := l.launch(ctx, name, spec, netip.Addr{})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.instances[component] = append(l.instances[component], in)
	l.mu.Unlock()
	if err := l.publish(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// launch runs the process name as spec describes, at addr (zero: a fresh address), and waits
// for its readiness probe.
func (l *Lobby) launch(ctx context.Context, name string, spec chart.ProcessSpec, addr netip.Addr) (*Instance, error) {
	component := spec.Component
	if !addr.IsValid() {
		var err error
		if addr, err = l.c.AllocAddr(); err != nil {
			return nil, err
		}
	}
	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		env = append(env, k+"="+localAddr(k, v))
	}
	for k, path := range spec.FieldRefs {
		switch path {
		case "metadata.name", "metadata.namespace":
			// RunBinary sets POD_NAME and POD_NAMESPACE from the service account and name.
			if (k == "POD_NAME" && path == "metadata.name") || (k == "POD_NAMESPACE" && path == "metadata.namespace") {
				continue
			}
			return nil, fmt.Errorf("start %s: env %s from %s: only POD_NAME and POD_NAMESPACE are filled in", component, k, path)
		case "status.podIP":
			env = append(env, k+"="+addr.String())
		default:
			return nil, fmt.Errorf("start %s: env %s comes from field %s, which local processes do not have", component, k, path)
		}
	}
	env, err := l.projectTokens(ctx, name, spec, env)
	if err != nil {
		return nil, err
	}
	slices.Sort(env)
	p, err := l.c.RunBinary(ctx, framework.ProcessSpec{
		Name:           name,
		Path:           l.bins[component],
		Args:           spec.Args,
		Env:            env,
		ServiceAccount: l.Namespace + "/" + spec.ServiceAccount,
		Addr:           addr,
	})
	if err != nil {
		return nil, err
	}
	in := &Instance{Component: component, Process: p, Addr: addr, Ports: spec.Ports}
	if err := l.waitReady(ctx, in, spec.Probes.Readiness); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return in, nil
}

// projectTokens mints each projected ServiceAccount token spec mounts, as the kubelet would for
// the pod's ServiceAccount, writes it to a file, and returns env with the variables that name the
// token's path in the container pointed at that file. The tokens live as long as the framework's
// (longer than a test run), so nothing renews them.
func (l *Lobby) projectTokens(ctx context.Context, name string, spec chart.ProcessSpec, env []string) ([]string, error) {
	for i, t := range spec.Tokens {
		var audiences []string
		if t.Audience != "" {
			audiences = []string{t.Audience}
		}
		token, err := l.c.ServiceAccountToken(ctx, l.Namespace+"/"+spec.ServiceAccount, audiences...)
		if err != nil {
			return nil, fmt.Errorf("start %s: project token %s: %w", name, t.Path, err)
		}
		file, err := l.c.WriteTokenFile(fmt.Sprintf("%s-%d", name, i), token)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		for j, e := range env {
			if k, v, _ := strings.Cut(e, "="); v == t.Path {
				env[j] = k + "=" + file
			}
		}
	}
	return env, nil
}

// Stop takes an instance out of its Services' EndpointSlices first, as the endpoints of a
// terminating pod are, then sends it SIGTERM and waits for it to exit.
func (l *Lobby) Stop(ctx context.Context, in *Instance) error {
	l.mu.Lock()
	l.instances[in.Component] = slices.DeleteFunc(l.instances[in.Component], func(x *Instance) bool { return x == in })
	l.mu.Unlock()
	if err := l.publish(ctx); err != nil {
		return err
	}
	return in.Process.Stop()
}

// localAddr rewrites a wildcard listen address (":port") to the $(POD_IP) placeholder RunBinary
// fills in, for variables that name listen addresses (LOBBY_*_ADDR).
func localAddr(name, value string) string {
	if strings.HasPrefix(name, "LOBBY_") && strings.HasSuffix(name, "_ADDR") && strings.HasPrefix(value, ":") {
		return "$(POD_IP)" + value
	}
	return value
}

// waitReady polls the readiness probe until it passes, the process exits, or the bound passes. A
// container without a readiness probe is ready once started, as Kubernetes counts it.
func (l *Lobby) waitReady(ctx context.Context, in *Instance, probe *chart.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, l.ready)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if exited, err := in.Process.Exited(); exited {
			return fmt.Errorf("start %s: exited before it was ready (%v); see %s", in.Process.Name, err, in.Process.LogFile)
		}
		if probe == nil {
			return nil
		}
		url := "http://" + netip.AddrPortFrom(in.Addr, uint16(probe.Port)).String() + probe.Path
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start %s: readiness probe %s did not pass within %v; see %s", in.Process.Name, url, l.ready, in.Process.LogFile)
		case <-tick.C:
		}
	}
}

// publish writes, for every rendered Service, an EndpointSlice listing the ready instances of the
// component it selects, and the Services' DNS names to /etc/hosts.
func (l *Lobby) publish(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var entries []hosts.Entry
	for _, obj := range l.Rendered.OfKind("Service") {
		svc := &corev1.Service{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, svc); err != nil {
			return fmt.Errorf("read Service %s: %w", obj.GetName(), err)
		}
		comp := svc.Spec.Selector["app.kubernetes.io/component"]
		if _, ok := l.specs[comp]; !ok {
			continue
		}
		slice, err := l.endpointSlice(svc, l.instances[comp])
		if err != nil {
			return err
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(slice)
		if err != nil {
			return fmt.Errorf("convert EndpointSlice %s: %w", slice.Name, err)
		}
		if err := l.c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}),
			client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply EndpointSlice %s: %w", slice.Name, err)
		}
		for _, in := range l.instances[comp] {
			entries = append(entries, hosts.Entry{Addr: in.Addr, Names: hosts.ServiceNames(svc.Name, svc.Namespace)})
		}
	}
	return hosts.Set(entries)
}

// endpointSlice returns the EndpointSlice of svc listing instances, with svc's ports resolved to
// the instances' container ports.
func (l *Lobby) endpointSlice(svc *corev1.Service, instances []*Instance) (*discoveryv1.EndpointSlice, error) {
	spec := l.specs[svc.Spec.Selector["app.kubernetes.io/component"]]
	slice := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      svc.Name + "-processes",
			Namespace: l.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   managedBy,
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for _, sp := range svc.Spec.Ports {
		port := sp.TargetPort.IntVal
		if name := sp.TargetPort.StrVal; name != "" {
			p, ok := spec.Ports[name]
			if !ok {
				return nil, fmt.Errorf("publish Service %s: target port %q is not a container port of %s", svc.Name, name, spec.Component)
			}
			port = p
		}
		if port == 0 {
			port = sp.Port
		}
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{
			Name: ptr.To(sp.Name), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP), AppProtocol: sp.AppProtocol,
		})
	}
	for _, in := range instances {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{in.Addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: l.Namespace, Name: in.Process.Name},
		})
	}
	return slice, nil
}

// Uninstall stops every process and deletes the release's objects (cluster-scoped ones included;
// the CRD is left, as Helm leaves CRDs).
func (l *Lobby) Uninstall(ctx context.Context) error {
	var errs []error
	for _, comp := range slices.Backward(Components) {
		for _, in := range l.Instances(comp) {
			if err := l.Stop(ctx, in); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, obj := range slices.Backward(l.Rendered.Objects) {
		if kind := obj.GetKind(); kind == "Deployment" || kind == "CustomResourceDefinition" || chart.ForPrometheusOperator(obj) {
			continue
		}
		if err := l.c.Client.Delete(ctx, obj.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", obj.GetKind(), obj.GetName(), err))
		}
	}
	errs = append(errs, hosts.Set(nil))
	return errors.Join(errs...)
}
