package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/chart"
)

// VariantOptions says how to configure one process of a component differently from the
// release's own.
type VariantOptions struct {
	// Name tells the variant's process apart: it runs as <release>-<component>-<Name>, with its
	// log in that name too. Required.
	Name string
	// ValuesFiles and Set are the whole values the chart is rendered with for the variant, under
	// the release's name and namespace; they replace the release's values rather than add to
	// them, so pass the release's files first.
	ValuesFiles []string
	Set         map[string]string
	// Addr is the address the process binds, so that a certificate can name it before the
	// process exists; zero allocates a fresh one.
	Addr netip.Addr
	// Publish lists the variant in the release's Services (their EndpointSlices and DNS names)
	// beside the release's own instances, so that the scalers subscribe to it (an interceptor
	// variant then wakes the apps whose requests it holds). Stop a published variant with
	// Lobby.Stop, which takes it out again.
	Publish bool
}

// StartVariant starts one process of component configured from the chart rendered with o's
// values (the scaler with TLS on, say), as the release's service account, and waits for its
// readiness probe. The Secrets the rendered container mounts are read from the release
// namespace and written to files, one per key, as a Secret volume presents them, and the
// container's environment and arguments are pointed at those files instead of the mount path.
//
// Unless o.Publish says otherwise, the variant is not published in the release's Services or DNS
// names: clients reach it at its address only, so the release's own instances keep all the
// traffic that goes through the Services. Stop it with its Process.Stop.
func (l *Lobby) StartVariant(ctx context.Context, component string, o VariantOptions) (*Instance, error) {
	if _, ok := l.specs[component]; !ok {
		return nil, fmt.Errorf("start variant of %q: not a component; components are %v", component, Components)
	}
	if o.Name == "" || strings.ContainsAny(o.Name, "/ ") {
		return nil, fmt.Errorf("start variant of %s: name %q must be non-empty, without '/' or spaces", component, o.Name)
	}
	r, err := chart.Render(ctx, l.Release, l.Namespace, o.ValuesFiles, o.Set)
	if err != nil {
		return nil, fmt.Errorf("start variant %s of %s: %w", o.Name, component, err)
	}
	spec, err := r.Process(component)
	if err != nil {
		return nil, fmt.Errorf("start variant %s of %s: %w", o.Name, component, err)
	}
	name := l.Release + "-" + component + "-" + o.Name
	if len(spec.Mounts) > 0 {
		dir, err := os.MkdirTemp(l.c.Dir, name+"-volumes-")
		if err != nil {
			return nil, fmt.Errorf("start variant %s: %w", name, err)
		}
		if spec, err = l.mountSecrets(ctx, spec, dir); err != nil {
			return nil, fmt.Errorf("start variant %s: %w", name, err)
		}
	}
	in, err := l.launch(ctx, name, spec, o.Addr)
	if err != nil || !o.Publish {
		return in, err
	}
	l.mu.Lock()
	l.instances[component] = append(l.instances[component], in)
	l.mu.Unlock()
	if err := l.publish(ctx); err != nil {
		_ = l.Stop(ctx, in)
		return nil, fmt.Errorf("publish variant %s: %w", name, err)
	}
	return in, nil
}

// mountSecrets writes each Secret spec mounts into a folder of dir, and returns spec with every
// environment value and argument under a mount path (or comma-separated list of such paths)
// rewritten to the matching folder.
func (l *Lobby) mountSecrets(ctx context.Context, spec chart.ProcessSpec, dir string) (chart.ProcessSpec, error) {
	local := map[string]string{} // mount path → folder
	for i, m := range spec.Mounts {
		var s corev1.Secret
		if err := l.c.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: m.Secret}, &s); err != nil {
			return spec, fmt.Errorf("read Secret %s/%s mounted at %s: %w", l.Namespace, m.Secret, m.Path, err)
		}
		folder := filepath.Join(dir, fmt.Sprintf("%d-%s", i, m.Secret))
		if err := os.Mkdir(folder, 0o700); err != nil {
			return spec, err
		}
		for key, value := range s.Data {
			if strings.ContainsAny(key, "/\\") || key == "." || key == ".." {
				return spec, fmt.Errorf("Secret %s/%s: key %q cannot be a file name", l.Namespace, m.Secret, key)
			}
			if err := os.WriteFile(filepath.Join(folder, key), value, 0o600); err != nil {
				return spec, fmt.Errorf("write Secret %s/%s key %s: %w", l.Namespace, m.Secret, key, err)
			}
		}
		local[filepath.Clean(m.Path)] = folder
	}
	rewritePath := func(v string) string {
		for mount, folder := range local {
			if v == mount {
				return folder
			}
			if rest, ok := strings.CutPrefix(v, mount+"/"); ok {
				return filepath.Join(folder, rest)
			}
		}
		return v
	}
	// A value may list paths separated by commas (LOBBY_PROXY_TLS_CERT_DIRS).
	rewrite := func(v string) string {
		parts := strings.Split(v, ",")
		for i, p := range parts {
			parts[i] = rewritePath(p)
		}
		return strings.Join(parts, ",")
	}
	env := maps.Clone(spec.Env)
	for k, v := range env {
		env[k] = rewrite(v)
	}
	args := make([]string, len(spec.Args))
	for i, a := range spec.Args {
		args[i] = rewrite(a)
	}
	spec.Env, spec.Args, spec.Mounts = env, args, nil
	return spec, nil
}
