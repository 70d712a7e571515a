package kubelet

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "B": "beta", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct {
		name, in, want string
	}{
		{"a string without references is unchanged", "plain", "plain"},
		{"a defined reference is replaced", "x-$(A)-y", "x-alpha-y"},
		{"adjacent references are all replaced", "$(A)$(B)", "alphabeta"},
		{"an undefined reference stays as written", "$(NOPE)/$(A)", "$(NOPE)/alpha"},
		{"a reference to an empty value becomes empty", "[$(EMPTY)]", "[]"},
		{"a double dollar escapes a reference", "$$(A)", "$(A)"},
		{"a double dollar alone is one dollar", "cost $$5", "cost $5"},
		{"a dollar before another character stays", "$A and $", "$A and $"},
		{"an unterminated reference stays", "$(A", "$(A"},
		{"a trailing dollar stays", "end$", "end$"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, lookup); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	kube := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"color": "blue", "size": "L"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "creds"}, Data: map[string][]byte{"token": []byte("s3cret")}},
	)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: "u-1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "runner"},
	}
	addrs := podAddrs{podIP: "10.244.1.7", hostIP: "10.244.0.1"}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}

	t.Run("every supported source resolves, in order, with later names overriding", func(t *testing.T) {
		c := &corev1.Container{
			Name:    "app",
			EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			Env: []corev1.EnvVar{
				{Name: "NAME", ValueFrom: field("metadata.name")},
				{Name: "NS", ValueFrom: field("metadata.namespace")},
				{Name: "UID", ValueFrom: field("metadata.uid")},
				{Name: "APP", ValueFrom: field("metadata.labels['app']")},
				{Name: "IP", ValueFrom: field("status.podIP")},
				{Name: "HOST", ValueFrom: field("status.hostIP")},
				{Name: "NODE", ValueFrom: field("spec.nodeName")},
				{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
				{Name: "COLOR", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "color"}}},
				{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
				{Name: "URL", Value: "http://$(IP):8080/$(NAME)?later=$(LATER)"},
				{Name: "LATER", Value: "x"},
				{Name: "CFG_size", Value: "XL"},
			},
		}
		env, err := containerEnv(t.Context(), kube, pod, c, addrs)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"POD_IP": "10.244.1.7", "HOSTNAME": "web-1", "CFG_color": "blue", "CFG_size": "XL",
			"NAME": "web-1", "NS": "ns", "UID": "u-1", "APP": "web", "IP": "10.244.1.7", "HOST": "10.244.0.1",
			"NODE": "node-a", "SA": "runner", "COLOR": "blue", "TOKEN": "s3cret",
			"URL": "http://10.244.1.7:8080/web-1?later=$(LATER)",
		}
		for k, v := range want {
			if got, ok := env.lookup(k); !ok || got != v {
				t.Errorf("%s = %q (set: %v), want %q", k, got, ok, v)
			}
		}
		environ := env.environ()
		if i, j := slices.Index(environ, "CFG_size=XL"), slices.Index(environ, "NAME=web-1"); i < 0 || j < 0 || i > j {
			t.Errorf("an overridden variable should keep its first position; environ = %v", environ)
		}
	})

	t.Run("the spec may override POD_IP", func(t *testing.T) {
		c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "POD_IP", Value: "1.2.3.4"}}}
		env, err := containerEnv(t.Context(), kube, pod, c, addrs)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := env.lookup("POD_IP"); v != "1.2.3.4" {
			t.Errorf("POD_IP = %q, want the spec's value", v)
		}
	})

	errTests := []struct {
		name    string
		env     corev1.EnvVar
		wantErr string
	}{
		{"a missing ConfigMap is an error naming it",
			corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}},
			`configmap "nope" not found`},
		{"a missing key of a Secret is an error naming it",
			corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			"couldn't find key password in Secret ns/creds"},
		{"an unsupported field path is an error listing the supported ones",
			corev1.EnvVar{Name: "X", ValueFrom: field("status.phase")},
			`fieldRef "status.phase" is not supported`},
		{"resourceFieldRef is refused clearly",
			corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			"resourceFieldRef is not supported"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{tt.env}}
			_, err := containerEnv(t.Context(), kube, pod, c, addrs)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}

	t.Run("optional sources that are missing leave the variable out", func(t *testing.T) {
		c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{
			{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptr.To(true)}}},
			{Name: "B", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "missing", Optional: ptr.To(true)}}},
		}}
		env, err := containerEnv(t.Context(), kube, pod, c, addrs)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"A", "B"} {
			if _, ok := env.lookup(n); ok {
				t.Errorf("%s is set, want it left out", n)
			}
		}
	})
}

func TestContainerArgs(t *testing.T) {
	var env envList
	env.set("PORT", "9000")
	tests := []struct {
		name string
		c    corev1.Container
		want []string
	}{
		{"without command or args the image is argv[0]", corev1.Container{Image: "lobby.test/echo"}, []string{"lobby.test/echo"}},
		{"args follow the entrypoint", corev1.Container{Image: "lobby.test/echo", Args: []string{"-port", "$(PORT)"}},
			[]string{"lobby.test/echo", "-port", "9000"}},
		{"command replaces the entrypoint and args follow it", corev1.Container{Image: "i", Command: []string{"/echo", "-v"}, Args: []string{"--x=$(PORT)", "$$(PORT)"}},
			[]string{"/echo", "-v", "--x=9000", "$(PORT)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := containerArgs(&tt.c, &env); !slices.Equal(got, tt.want) {
				t.Errorf("argv = %q, want %q", got, tt.want)
			}
		})
	}
}
