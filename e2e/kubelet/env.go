package kubelet

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// expand replaces each $(NAME) in s by lookup(NAME) the way Kubernetes expands command, args and
// env values: "$$" is an escaped "$", a reference to an undefined name stays as written, and so
// does an unterminated "$(".
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// envList is an ordered environment in which a later definition of a name replaces an earlier
// one in place.
type envList struct {
	names  []string
	values map[string]string
}

func (e *envList) set(name, value string) {
	if e.values == nil {
		e.values = make(map[string]string)
	}
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

func (e *envList) lookup(name string) (string, bool) {
	v, ok := e.values[name]
	return v, ok
}

// environ returns the list as NAME=value strings, in order of first definition.
func (e *envList) environ() []string {
	out := make([]string, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, n+"="+e.values[n])
	}
	return out
}

// podAddrs are the addresses a container's environment may refer to.
type podAddrs struct {
	podIP, hostIP string
}

// containerEnv composes the environment of container c of pod as the kubelet does: a base the
// image would provide (PATH, HOME, HOSTNAME), then POD_IP (always set, so apps can bind their
// pod address — every pod shares one network namespace), then envFrom, then env with $(VAR)
// references to names defined before it expanded. Missing ConfigMaps, Secrets and keys that are
// not optional are errors, reported as CreateContainerConfigError.
func containerEnv(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, addrs podAddrs) (*envList, error) {
	var env envList
	env.set("PATH", pathOrDefault())
	env.set("HOME", "/")
	env.set("HOSTNAME", pod.Name)
	env.set("POD_IP", addrs.podIP)

	refs := refCache{kube: kube, ns: pod.Namespace}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := refs.configMap(ctx, from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			if cm != nil {
				data = cm.Data
			}
		case from.SecretRef != nil:
			s, err := refs.secret(ctx, from.SecretRef.Name, from.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			if s != nil {
				data = make(map[string]string, len(s.Data))
				for k, v := range s.Data {
					data[k] = string(v)
				}
			}
		default:
			return nil, fmt.Errorf("container %q: envFrom entry names neither configMapRef nor secretRef", c.Name)
		}
		for k, v := range sortedPairs(data) {
			env.set(from.Prefix+k, v)
		}
	}

	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env.set(e.Name, expand(e.Value, env.lookup))
			continue
		}
		v, ok, err := valueFrom(ctx, &refs, pod, c, e, addrs)
		if err != nil {
			return nil, err
		}
		if ok {
			env.set(e.Name, v)
		}
	}
	return &env, nil
}

// valueFrom resolves an env var's valueFrom; ok is false when an optional source is missing,
// in which case the variable is left out as Kubernetes leaves it out.
func valueFrom(ctx context.Context, refs *refCache, pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar, addrs podAddrs) (string, bool, error) {
	src := e.ValueFrom
	switch {
	case src.FieldRef != nil:
		v, err := fieldValue(pod, src.FieldRef.FieldPath, addrs)
		if err != nil {
			return "", false, fmt.Errorf("container %q env %s: %w", c.Name, e.Name, err)
		}
		return v, true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := refs.configMap(ctx, ref.Name, ref.Optional)
		if err != nil || cm == nil {
			return "", false, err
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return v, true, nil
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := refs.secret(ctx, ref.Name, ref.Optional)
		if err != nil || s == nil {
			return "", false, err
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if isOptional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return string(v), true, nil
	case src.ResourceFieldRef != nil:
		return "", false, fmt.Errorf("container %q env %s: resourceFieldRef is not supported by the process kubelet; set a value instead", c.Name, e.Name)
	default:
		return "", false, fmt.Errorf("container %q env %s: valueFrom names no source", c.Name, e.Name)
	}
}

// fieldValue returns the value of a downward-API field path.
func fieldValue(pod *corev1.Pod, path string, addrs podAddrs) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return addrs.podIP, nil
	case "status.hostIP", "status.hostIPs":
		return addrs.hostIP, nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported; use metadata.name, metadata.namespace, metadata.uid, "+
		"metadata.labels['key'], metadata.annotations['key'], spec.nodeName, spec.serviceAccountName, status.podIP or status.hostIP", path)
}

// subscript parses prefix['key'] and returns key.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// refCache fetches each ConfigMap and Secret a container refers to once.
type refCache struct {
	kube       kubernetes.Interface
	ns         string
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

// configMap returns the named ConfigMap, or nil when it is missing and optional.
func (r *refCache) configMap(ctx context.Context, name string, optional *bool) (*corev1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := r.kube.CoreV1().ConfigMaps(r.ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && isOptional(optional):
		cm = nil
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("configmap %q not found", name)
	case err != nil:
		return nil, fmt.Errorf("get configmap %q: %w", name, err)
	}
	if r.configMaps == nil {
		r.configMaps = make(map[string]*corev1.ConfigMap)
	}
	r.configMaps[name] = cm
	return cm, nil
}

// secret returns the named Secret, or nil when it is missing and optional.
func (r *refCache) secret(ctx context.Context, name string, optional *bool) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	s, err := r.kube.CoreV1().Secrets(r.ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && isOptional(optional):
		s = nil
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("secret %q not found", name)
	case err != nil:
		return nil, fmt.Errorf("get secret %q: %w", name, err)
	}
	if r.secrets == nil {
		r.secrets = make(map[string]*corev1.Secret)
	}
	r.secrets[name] = s
	return s, nil
}

func isOptional(b *bool) bool { return b != nil && *b }

// containerArgs returns argv for container c: the image's executable is the entrypoint, so
// with command set argv is command followed by args (command[0] only names the program, which
// is always the image's executable), and without it argv is the image name followed by args.
// $(VAR) references are expanded from env.
func containerArgs(c *corev1.Container, env *envList) []string {
	argv := make([]string, 0, 1+len(c.Command)+len(c.Args))
	if len(c.Command) > 0 {
		for _, s := range c.Command {
			argv = append(argv, expand(s, env.lookup))
		}
	} else {
		argv = append(argv, c.Image)
	}
	for _, s := range c.Args {
		argv = append(argv, expand(s, env.lookup))
	}
	return argv
}

func pathOrDefault() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// sortedPairs yields the entries of m in key order, so environments are deterministic.
func sortedPairs(m map[string]string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}
