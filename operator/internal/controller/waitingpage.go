package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ConditionWaitingPage is the condition, on objects of both kinds whose coldStart.waitingPage
// reads its body from a ConfigMap, that says whether the interceptors can serve that page. While
// it is False they serve lobby's built-in page; the object is routed either way.
const ConditionWaitingPage = "WaitingPage"

// Reasons of the WaitingPage condition.
const (
	// ReasonWaitingPageLoaded: the ConfigMap and key exist and carry the label.
	ReasonWaitingPageLoaded = "Loaded"
	// ReasonWaitingPageConfigMapNotFound: the ConfigMap or key is missing, too large, or lacks
	// the label; the built-in page is served meanwhile.
	ReasonWaitingPageConfigMapNotFound = "ConfigMapNotFound"
)

// pageRecheck is how often a waiting page's ConfigMap that was found is checked again: the
// operator does not watch ConfigMaps, so a ConfigMap deleted or changed later is reported within
// this long (the interceptors, which watch it, follow at once).
var pageRecheck = 5 * time.Minute

// waitingPageKey is the key read when a waiting page's bodyFromConfigMap names none.
const waitingPageKey = "index.html"

// maxPageBytes is the largest page the interceptors serve from a ConfigMap (routing.MaxBodyBytes).
const maxPageBytes = 256 << 10

// setWaitingPageCondition sets, or removes when name is empty (no ConfigMap page), the
// WaitingPage condition of an object in namespace from ConfigMap name's key, read through reader.
// It reports whether the page is missing, so the caller can check again later (ConfigMaps are not
// watched).
func setWaitingPageCondition(ctx context.Context, reader client.Reader, conditions *[]metav1.Condition, generation int64,
	namespace, name, key string) (missing bool, err error) {
	if name == "" || reader == nil {
		meta.RemoveStatusCondition(conditions, ConditionWaitingPage)
		return false, nil
	}
	if key == "" {
		key = waitingPageKey
	}
	c := metav1.Condition{Type: ConditionWaitingPage, ObservedGeneration: generation, Status: metav1.ConditionFalse,
		Reason: ReasonWaitingPageConfigMapNotFound}
	cm := &corev1.ConfigMap{}
	err = reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, cm)
	body, ok := cm.Data[key]
	switch {
	case apierrors.IsNotFound(err):
		c.Message = fmt.Sprintf("ConfigMap %s/%s named in spec.coldStart.waitingPage.bodyFromConfigMap does not exist: "+
			"the interceptors serve the built-in waiting page until it does", namespace, name)
	case err != nil:
		return false, fmt.Errorf("get ConfigMap %s/%s: %w", namespace, name, err)
	case cm.Labels[bodyLabel] != "true":
		c.Message = fmt.Sprintf("ConfigMap %s/%s named in spec.coldStart.waitingPage.bodyFromConfigMap lacks the label %s=true, "+
			"without which the interceptors do not read it: they serve the built-in waiting page", namespace, name, bodyLabel)
	case !ok:
		c.Message = fmt.Sprintf("ConfigMap %s/%s named in spec.coldStart.waitingPage.bodyFromConfigMap has no key %q: "+
			"the interceptors serve the built-in waiting page", namespace, name, key)
	case len(body) > maxPageBytes:
		c.Message = fmt.Sprintf("key %q of ConfigMap %s/%s holds %d bytes, more than the %d a waiting page may: "+
			"the interceptors serve the built-in waiting page", key, namespace, name, len(body), maxPageBytes)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonWaitingPageLoaded
		c.Message = fmt.Sprintf("the waiting page is key %q of ConfigMap %s/%s", key, namespace, name)
	}
	meta.SetStatusCondition(conditions, c)
	return c.Status == metav1.ConditionFalse, nil
}
