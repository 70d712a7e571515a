package chart

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ProcessSpec is how the chart runs one of lobby's binaries, reduced to what starting it as a
// local process needs.
type ProcessSpec struct {
	// Component is the binary: interceptor, scaler or operator.
	Component string
	// Image is the container image reference.
	Image string
	// Args are the container's command and arguments after the image's entrypoint (the binary);
	// empty when the chart passes none.
	Args []string
	// Env holds the literal environment variables, in the container's order of precedence (a
	// later entry of the same name wins, as in Kubernetes), and those the downward API fills from
	// the container's resources, resolved as the kubelet resolves them (limits.memory → bytes).
	Env map[string]string
	// FieldRefs maps the variables filled from the downward API to their field path, such as
	// POD_NAME → metadata.name.
	FieldRefs map[string]string
	// Ports maps container port names to numbers.
	Ports map[string]int32
	// ServiceAccount is the pod's service account.
	ServiceAccount string
	// Probes are the container's probes.
	Probes Probes
	// Mounts are the container's volume mounts that come from Secrets.
	Mounts []Mount
	// Tokens are the projected ServiceAccount tokens the container's volume mounts present.
	Tokens []Token
	// Replicas is the Deployment's replica count; 0 when an autoscaler owns it.
	Replicas int32
	// TerminationGracePeriod is the pod's grace period between SIGTERM and SIGKILL.
	TerminationGracePeriod time.Duration
}

// Probes are a container's health checks; nil when the chart declares none of that kind.
type Probes struct {
	// Liveness restarts the container when it fails.
	Liveness *Probe
	// Readiness takes the pod out of its Services when it fails.
	Readiness *Probe
	// Startup holds off the other probes until it first succeeds.
	Startup *Probe
}

// Probe is an HTTP GET health check.
type Probe struct {
	// Path is the request path.
	Path string
	// Port is the container port number probed (named ports resolved).
	Port int32
	// PortName is the port's name when the probe names it.
	PortName string
	// Period is the time between probes.
	Period time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	// FailureThreshold is how many consecutive failures count as failed.
	FailureThreshold int32
}

// Mount is a Secret mounted into the container.
type Mount struct {
	// Path is the mount path.
	Path string
	// Secret names the Secret.
	Secret string
}

// Token is a projected ServiceAccount token of the pod's ServiceAccount, mounted into the
// container.
type Token struct {
	// Path is the token file's path in the container: the mount path and the projection's path.
	Path string
	// Audience is the audience the token is issued for; empty means the API server's.
	Audience string
	// ExpirationSeconds is the token's requested lifetime.
	ExpirationSeconds int64
}

// Process returns how the chart runs component (interceptor, scaler or operator): the container
// of that name in the Deployment labelled app.kubernetes.io/component=<component>.
func (r *Rendered) Process(component string) (ProcessSpec, error) {
	var dep *appsv1.Deployment
	for _, o := range r.OfKind("Deployment") {
		if o.GetLabels()["app.kubernetes.io/component"] != component {
			continue
		}
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, d); err != nil {
			return ProcessSpec{}, fmt.Errorf("read Deployment %s: %w", o.GetName(), err)
		}
		dep = d
	}
	if dep == nil {
		return ProcessSpec{}, fmt.Errorf("find process %q: no Deployment labelled app.kubernetes.io/component=%s; components are %v",
			component, component, Components)
	}
	pod := dep.Spec.Template.Spec
	var c *corev1.Container
	for i := range pod.Containers {
		if pod.Containers[i].Name == component {
			c = &pod.Containers[i]
		}
	}
	if c == nil {
		return ProcessSpec{}, fmt.Errorf("find process %q: Deployment %s has no container named %s", component, dep.Name, component)
	}
	p := ProcessSpec{
		Component:      component,
		Image:          c.Image,
		Args:           append(append([]string(nil), c.Command...), c.Args...),
		Env:            map[string]string{},
		FieldRefs:      map[string]string{},
		Ports:          map[string]int32{},
		ServiceAccount: pod.ServiceAccountName,
	}
	if dep.Spec.Replicas != nil {
		p.Replicas = *dep.Spec.Replicas
	}
	if g := pod.TerminationGracePeriodSeconds; g != nil {
		p.TerminationGracePeriod = time.Duration(*g) * time.Second
	}
	for _, port := range c.Ports {
		p.Ports[port.Name] = port.ContainerPort
	}
	for _, e := range c.Env {
		delete(p.Env, e.Name)
		delete(p.FieldRefs, e.Name)
		switch {
		case e.ValueFrom == nil:
			p.Env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			p.FieldRefs[e.Name] = e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom.ResourceFieldRef != nil:
			v, err := resourceValue(c, e.ValueFrom.ResourceFieldRef)
			if err != nil {
				return ProcessSpec{}, fmt.Errorf("read process %q: env %s: %w", component, e.Name, err)
			}
			p.Env[e.Name] = v
		default:
			return ProcessSpec{}, fmt.Errorf("read process %q: env %s comes from a source other than a literal, a fieldRef or a resourceFieldRef", component, e.Name)
		}
	}
	secrets := map[string]string{}
	projected := map[string]*corev1.ProjectedVolumeSource{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
		if v.Projected != nil {
			projected[v.Name] = v.Projected
		}
	}
	for _, m := range c.VolumeMounts {
		if s, ok := secrets[m.Name]; ok {
			p.Mounts = append(p.Mounts, Mount{Path: m.MountPath, Secret: s})
		}
		pv, ok := projected[m.Name]
		if !ok {
			continue
		}
		for _, src := range pv.Sources {
			if t := src.ServiceAccountToken; t != nil {
				tok := Token{Path: path.Join(m.MountPath, t.Path), Audience: t.Audience}
				if t.ExpirationSeconds != nil {
					tok.ExpirationSeconds = *t.ExpirationSeconds
				}
				p.Tokens = append(p.Tokens, tok)
			}
		}
	}
	sort.Slice(p.Mounts, func(i, j int) bool { return p.Mounts[i].Path < p.Mounts[j].Path })
	var err error
	if p.Probes.Liveness, err = probe(c.LivenessProbe, p.Ports); err != nil {
		return ProcessSpec{}, fmt.Errorf("read %s liveness probe: %w", component, err)
	}
	if p.Probes.Readiness, err = probe(c.ReadinessProbe, p.Ports); err != nil {
		return ProcessSpec{}, fmt.Errorf("read %s readiness probe: %w", component, err)
	}
	if p.Probes.Startup, err = probe(c.StartupProbe, p.Ports); err != nil {
		return ProcessSpec{}, fmt.Errorf("read %s startup probe: %w", component, err)
	}
	return p, nil
}

// resourceValue resolves a resourceFieldRef of container c as the kubelet does: the container's
// request or limit divided by the divisor (1 when unset), rounded up, cpu in cores. A resource
// the container does not declare is an error: the kubelet would give the node's allocatable
// amount, which a local process has no equivalent of.
func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		return "", fmt.Errorf("resourceFieldRef names container %q, not its own %q", ref.ContainerName, c.Name)
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	var list corev1.ResourceList
	switch {
	case ok && kind == "limits":
		list = c.Resources.Limits
	case ok && kind == "requests":
		list = c.Resources.Requests
	default:
		return "", fmt.Errorf("resourceFieldRef resource %q is not limits.<name> or requests.<name>", ref.Resource)
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %s: the container declares none, and the node's allocatable amount the kubelet would give has no local equivalent", ref.Resource)
	}
	divisor := resource.MustParse("1")
	if !ref.Divisor.IsZero() {
		divisor = ref.Divisor
	}
	// Cpu is divided in millicores, so that a divisor of 1m works; everything else in units.
	n, d := q.Value(), divisor.Value()
	if corev1.ResourceName(name) == corev1.ResourceCPU {
		n, d = q.MilliValue(), divisor.MilliValue()
	}
	if d <= 0 {
		return "", fmt.Errorf("resourceFieldRef %s: divisor %s is not positive", ref.Resource, divisor.String())
	}
	return strconv.FormatInt((n+d-1)/d, 10), nil
}

// probe converts an HTTP GET probe, applying Kubernetes' defaults for unset timings.
func probe(pr *corev1.Probe, ports map[string]int32) (*Probe, error) {
	if pr == nil {
		return nil, nil
	}
	if pr.HTTPGet == nil {
		return nil, fmt.Errorf("only httpGet probes are supported")
	}
	out := &Probe{
		Path:             pr.HTTPGet.Path,
		Period:           seconds(pr.PeriodSeconds, 10),
		Timeout:          seconds(pr.TimeoutSeconds, 1),
		FailureThreshold: pr.FailureThreshold,
	}
	if out.FailureThreshold == 0 {
		out.FailureThreshold = 3
	}
	switch pr.HTTPGet.Port.Type {
	case intstr.Int:
		out.Port = pr.HTTPGet.Port.IntVal
	default:
		name := pr.HTTPGet.Port.StrVal
		n, ok := ports[name]
		if !ok {
			if v, err := strconv.Atoi(name); err == nil {
				n, ok = int32(v), true
			}
		}
		if !ok {
			return nil, fmt.Errorf("probe port %q names no container port", name)
		}
		out.Port, out.PortName = n, name
	}
	return out, nil
}

func seconds(s, def int32) time.Duration {
	if s == 0 {
		s = def
	}
	return time.Duration(s) * time.Second
}
