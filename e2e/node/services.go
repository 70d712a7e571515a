package node

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lobby-http/lobby/e2e/hosts"
)

// PublishServices answers the DNS names of every Service in namespace that has a selector with
// its ready endpoints' addresses, through e2e/hosts, for the processes of the test binary
// (KEDA's operator dials the scaler by name). It stands in for cluster DNS and kube-proxy, which
// the local cluster has neither of; it reports an error when a Service has no ready endpoint.
// It replaces whatever e2e/hosts held.
func PublishServices(ctx context.Context, kube kubernetes.Interface, namespace string) error {
	svcs, err := kube.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("publish the Services of %s: %w", namespace, err)
	}
	slices, err := kube.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("publish the Services of %s: %w", namespace, err)
	}
	entries, err := serviceEntries(svcs.Items, slices.Items)
	if err != nil {
		return err
	}
	return hosts.Set(entries)
}

// serviceEntries returns the hosts entries of namespace's Services: each name resolves to the
// ready endpoint addresses of its Service.
func serviceEntries(svcs []corev1.Service, slices []discoveryv1.EndpointSlice) ([]hosts.Entry, error) {
	var entries []hosts.Entry
	for _, svc := range svcs {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		var addrs []netip.Addr
		for _, s := range slices {
			if s.Labels[discoveryv1.LabelServiceName] != svc.Name {
				continue
			}
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, a := range ep.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						addrs = append(addrs, ip)
					}
				}
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("publish Service %s/%s: no ready endpoint", svc.Namespace, svc.Name)
		}
		for _, a := range addrs {
			entries = append(entries, hosts.Entry{Addr: a, Names: hosts.ServiceNames(svc.Name, svc.Namespace)})
		}
	}
	return entries, nil
}
