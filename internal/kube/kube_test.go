package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// kubeconfigFor returns a minimal kubeconfig whose current context points at server.
func kubeconfigFor(server string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: ` + server + `
users:
- name: u
  user:
    token: secret
contexts:
- name: ctx
  context:
    cluster: c
    user: u
current-context: ctx
`
}

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := write("first", kubeconfigFor("https://first.example:6443"))
	second := write("second", kubeconfigFor("https://second.example:6443"))
	broken := write("broken", "clusters: [")
	missing := filepath.Join(dir, "missing")
	list := func(paths ...string) string { return strings.Join(paths, string(filepath.ListSeparator)) }

	tests := []struct {
		name       string
		kubeconfig string
		wantHost   string
		wantErr    []string
		wantIs     error
	}{
		{name: "One kubeconfig file gives its current context's server.", kubeconfig: first, wantHost: "https://first.example:6443"},
		{name: "In a path list the first file to set a value wins.", kubeconfig: list(second, first), wantHost: "https://second.example:6443"},
		{name: "Missing files in a path list are skipped.", kubeconfig: list(missing, first), wantHost: "https://first.example:6443"},
		{name: "A list of only missing files is an error naming the list.", kubeconfig: missing,
			wantErr: []string{"load kubeconfig " + missing + ": "}},
		{name: "A file that is not YAML is an error naming the list.", kubeconfig: broken,
			wantErr: []string{"load kubeconfig " + broken + ": "}},
		{name: "An empty path outside a cluster asks for KUBECONFIG.", kubeconfig: "",
			wantErr: []string{"load in-cluster configuration (set KUBECONFIG outside a cluster): "}, wantIs: rest.ErrNotInCluster},
	}
	// The in-cluster configuration comes from these variables; without them a process is outside
	// any cluster, even when the tests themselves run in a pod.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := RESTConfig(tt.kubeconfig)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one containing %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q does not wrap %q", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.Host != tt.wantHost {
				t.Errorf("Host = %q, want %q", c.Host, tt.wantHost)
			}
			if c.BearerToken != "secret" {
				t.Errorf("BearerToken = %q, want the kubeconfig's token", c.BearerToken)
			}
		})
	}
}
