// Package apps describes the sample apps of e2e/apps as Kubernetes objects, for the tests and the
// demo that deploy them to the local cluster, where the process kubelet runs image
// lobby.test/<name> as the program built from e2e/apps/<name>.
package apps

import (
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// EchoImage is the image of the echo app (e2e/apps/echo).
const EchoImage = "lobby.test/echo"

// EchoPort is the echo app's HTTP port, where its readiness path /healthz answers.
const EchoPort = 8080

// Echo describes a Deployment of the echo app and the Service in front of it.
type Echo struct {
	// Namespace and Name of the Deployment and the Service; the pods are labelled app=<Name>.
	Namespace, Name string
	// Replicas is the Deployment's replica count (0: scaled to zero).
	Replicas int32
	// Env is added to the container's environment (STARTUP_DELAY, RESPONSE_DELAY, GRPC_PORT, ...).
	Env map[string]string
	// ServicePortName names the Service's port 80; empty means "http". Name it h2c or grpc for
	// apps spoken to over HTTP/2.
	ServicePortName string
	// TargetPort is the container port the Service sends to; zero means EchoPort.
	TargetPort int32
	// GracePeriodSeconds is the pods' termination grace period; zero means 10.
	GracePeriodSeconds int64
	// TLSSecret, when set, names a Secret of the namespace with tls.crt and tls.key: the app
	// serves HTTPS with them (TLS_CERT, TLS_KEY), its probe asks over HTTPS, and the Service port
	// says appProtocol https.
	TLSSecret string
}

// Objects returns the Deployment and the Service.
func (e Echo) Objects() (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": e.Name}
	portName := e.ServicePortName
	if portName == "" {
		portName = "http"
	}
	target := e.TargetPort
	if target == 0 {
		target = EchoPort
	}
	grace := e.GracePeriodSeconds
	if grace == 0 {
		grace = 10
	}
	env := []corev1.EnvVar{
		{Name: "PORT", Value: "8080"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}
	for _, k := range slices.Sorted(maps.Keys(e.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: e.Env[k]})
	}
	scheme := corev1.URISchemeHTTP
	var appProtocol *string
	if e.TLSSecret != "" {
		fromSecret := func(name, key string) corev1.EnvVar {
			return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: e.TLSSecret}, Key: key,
			}}}
		}
		env = append(env, fromSecret("TLS_CERT", "tls.crt"), fromSecret("TLS_KEY", "tls.key"))
		scheme, appProtocol = corev1.URISchemeHTTPS, ptr.To("https")
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(e.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(grace),
					Containers: []corev1.Container{{
						Name:  "echo",
						Image: EchoImage,
						Env:   env,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: EchoPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http"), Scheme: scheme}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: portName, Port: 80, TargetPort: intstr.FromInt32(target), AppProtocol: appProtocol}},
		},
	}
	return dep, svc
}
