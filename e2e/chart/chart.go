// Package chart renders lobby's Helm chart (charts/lobby) with a pinned Helm and reads the result:
// the objects it would install, and for each binary the process the chart describes — arguments,
// environment, ports, service account and probes — so that the end-to-end suite starts lobby's
// binaries exactly as the chart configures them instead of keeping a second copy of that
// configuration.
package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// Components are the names of lobby's binaries as the chart labels them
// (app.kubernetes.io/component).
var Components = []string{"interceptor", "scaler", "operator"}

// Dir returns the absolute path of the chart in this checkout.
func Dir() string { return filepath.Join(repoRoot(), "charts", "lobby") }

// repoRoot is the checkout this source file belongs to.
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("chart: cannot locate its own source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the path of the pinned Helm binary: $HELM when set, else the one hack/helm.sh
// builds into the tools cache (building it the first time, which takes minutes).
func Helm(ctx context.Context) (string, error) {
	if p := os.Getenv("HELM"); p != "" {
		return p, nil
	}
	helmOnce.Do(func() {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(), "hack", "helm.sh"))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			helmErr = fmt.Errorf("build helm with hack/helm.sh: %w: %s", err, lastLines(stderr.String(), 20))
			return
		}
		helmPath = strings.TrimSpace(stdout.String())
	})
	return helmPath, helmErr
}

// RunHelm runs the pinned Helm with args and returns its standard output; the error carries its
// standard error.
func RunHelm(ctx context.Context, args ...string) ([]byte, error) {
	helm, err := Helm(ctx)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Keep Helm away from the user's repositories, cache and plugins.
	home, err := os.MkdirTemp("", "lobby-helm-")
	if err != nil {
		return nil, fmt.Errorf("create helm home: %w", err)
	}
	defer os.RemoveAll(home)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w: %s%s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()), lastLines(stdout.String(), 20))
	}
	return stdout.Bytes(), nil
}

// Rendered is the chart rendered for one release.
type Rendered struct {
	// Release is the release name.
	Release string
	// Namespace is the release namespace.
	Namespace string
	// Objects are the rendered objects, CRDs included, in the order Helm printed them.
	Objects []*unstructured.Unstructured
}

// monitoringGroup is the API group of the Prometheus Operator's kinds (ServiceMonitor,
// PrometheusRule), whose CRDs a cluster without the operator lacks.
const monitoringGroup = "monitoring.coreos.com"

// ForPrometheusOperator reports whether o is one of the Prometheus Operator's kinds, which only a
// cluster running the operator can hold.
func ForPrometheusOperator(o *unstructured.Unstructured) bool {
	return o.GroupVersionKind().Group == monitoringGroup
}

// Render renders the chart as `helm template` does for releaseName in namespace, with the values
// files (in order) and --set values (applied after them, keys in sorted order), CRDs included.
func Render(ctx context.Context, releaseName, namespace string, valuesFiles []string, set map[string]string) (*Rendered, error) {
	if releaseName == "" || namespace == "" {
		return nil, errors.New("render chart: releaseName and namespace are required")
	}
	args := []string{"template", releaseName, Dir(), "--namespace", namespace, "--include-crds"}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--set", k+"="+set[k])
	}
	out, err := RunHelm(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("render chart: %w", err)
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, fmt.Errorf("render chart: %w", err)
	}
	return &Rendered{Release: releaseName, Namespace: namespace, Objects: objs}, nil
}

// Decode splits a multi-document YAML stream into objects, skipping empty documents.
func Decode(stream []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode document %d: %w", len(objs)+1, err)
		}
		if t := bytes.TrimSpace(raw); len(t) == 0 || bytes.Equal(t, []byte("null")) || bytes.Equal(t, []byte("{}")) {
			continue
		}
		// Unstructured's own JSON decoding keeps integers as int64, as API clients see them.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("decode document %d: %w", len(objs)+1, err)
		}
		objs = append(objs, u)
	}
}

// Find returns the object of kind named name, or nil.
func (r *Rendered) Find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// OfKind returns the objects of kind, in render order.
func (r *Rendered) OfKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.Objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n" + strings.Join(lines, "\n")
}
