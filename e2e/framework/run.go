package framework

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/lobby-http/lobby/e2e/prebuilt"
)

// tokenLifetime is the lifetime of the service-account tokens RunBinary mints: longer than any
// test run, since nothing refreshes them.
const tokenLifetime = 24 * 60 * 60

// ProcessSpec describes one of lobby's binaries run as the chart would run it, but as a local
// process.
type ProcessSpec struct {
	// Name identifies the process; its log is LogDir/<Name>.log. Required, unique per cluster.
	Name string
	// Path is the executable (see Cluster.Build).
	Path string
	// Args are its arguments. $(POD_IP) in them is replaced by the process's address.
	Args []string
	// Env is added to the environment as NAME=value entries. $(POD_IP) in a value is
	// replaced by the process's address.
	Env []string
	// ServiceAccount, as namespace/name, is the identity the process runs as: RunBinary mints
	// a token for it with the TokenRequest API, writes a kubeconfig with it and sets
	// KUBECONFIG, POD_NAMESPACE and POD_NAME, as a pod of that service account would have.
	// The namespace and service account are created when missing; RBAC is the caller's. Empty:
	// the process gets no KUBECONFIG.
	ServiceAccount string
	// Addr is the address the process binds; zero allocates a fresh 10.244.255.x on the
	// namespace's loopback device. It is in the environment as POD_IP.
	Addr netip.Addr
}

// RunBinary starts a process as spec describes; Stop ends it (or the cluster's Stop does).
func (c *Cluster) RunBinary(ctx context.Context, spec ProcessSpec) (*Process, error) {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/ ") {
		return nil, fmt.Errorf("run binary: ProcessSpec.Name %q must be a non-empty name without '/' or spaces", spec.Name)
	}
	if spec.Path == "" {
		return nil, fmt.Errorf("run binary %s: ProcessSpec.Path is empty", spec.Name)
	}
	addr := spec.Addr
	if !addr.IsValid() {
		var err error
		if addr, err = c.AllocAddr(); err != nil {
			return nil, fmt.Errorf("run binary %s: %w", spec.Name, err)
		}
	}
	expand := func(s string) string { return strings.ReplaceAll(s, "$(POD_IP)", addr.String()) }
	env := []string{"POD_IP=" + addr.String()}
	if spec.ServiceAccount != "" {
		ns, name, ok := strings.Cut(spec.ServiceAccount, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("run binary %s: ProcessSpec.ServiceAccount %q is not namespace/name", spec.Name, spec.ServiceAccount)
		}
		kubeconfig, err := c.serviceAccountKubeconfig(ctx, spec.Name, ns, name)
		if err != nil {
			return nil, fmt.Errorf("run binary %s: %w", spec.Name, err)
		}
		env = append(env, "KUBECONFIG="+kubeconfig, "POD_NAMESPACE="+ns, "POD_NAME="+spec.Name)
	}
	for _, e := range spec.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("run binary %s: ProcessSpec.Env entry %q is not NAME=value", spec.Name, e)
		}
		env = append(env, expand(e))
	}
	args := make([]string, len(spec.Args))
	for i, a := range spec.Args {
		args[i] = expand(a)
	}
	p, err := startProcess(spec.Name, spec.Path, args, env, c.LogDir)
	if err != nil {
		return nil, fmt.Errorf("run binary: %w", err)
	}
	p.Addr = addr
	c.addProcess(p)
	return p, nil
}

// serviceAccountKubeconfig creates ns and the service account when missing, mints a token
// for it and writes a kubeconfig that uses it.
func (c *Cluster) serviceAccountKubeconfig(ctx context.Context, process, ns, name string) (string, error) {
	token, err := c.ServiceAccountToken(ctx, ns+"/"+name)
	if err != nil {
		return "", err
	}
	file := filepath.Join(c.Dir, process+".kubeconfig")
	if err := c.writeKubeconfig(file, "system:serviceaccount:"+ns+":"+name, keyPair{}, token); err != nil {
		return "", err
	}
	return file, nil
}

// Build returns the executable of the main package pkg (a path relative to the module root, such
// as ./interceptor), which prebuilt.Prepare built before the test binary entered its network
// namespace: nothing in the namespace can download a module, so nothing there runs `go build`.
func (c *Cluster) Build(_ context.Context, pkg string) (string, error) {
	return prebuilt.Path(pkg)
}
