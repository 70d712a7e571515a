package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// BodyLabel is the label a ConfigMap must carry, set to "true", for routes to read response
// bodies from it, as in the KEDA HTTP Add-on: other ConfigMaps are never read.
const BodyLabel = "http.keda.sh/response-body"

// errNotRead means a ConfigMap's watch has not listed it yet.
var errNotRead = errors.New("not read yet")

// ConfigMapWatcher keeps one informer per ConfigMap that some route reads a response body from,
// each limited by field selector to that one ConfigMap (and to those with BodyLabel), so the
// interceptor never lists or caches the other ConfigMaps of the cluster. The Watcher tells it
// which to watch after each rebuild and is told of every change, so bodies follow their
// ConfigMaps live.
type ConfigMapWatcher struct {
	client kubernetes.Interface

	mu      sync.Mutex
	watches map[string]*configMapWatch
}

type configMapWatch struct {
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewConfigMapWatcher returns a ConfigMapWatcher that reads ConfigMaps through client.
func NewConfigMapWatcher(client kubernetes.Interface) *ConfigMapWatcher {
	return &ConfigMapWatcher{client: client, watches: map[string]*configMapWatch{}}
}

// Data returns the data of ConfigMap namespace/name, or an error when it is not watched, not read
// yet, missing, or lacks BodyLabel.
func (c *ConfigMapWatcher) Data(namespace, name string) (map[string]string, error) {
	key := namespace + "/" + name
	c.mu.Lock()
	w := c.watches[key]
	c.mu.Unlock()
	if w == nil || !w.informer.HasSynced() {
		return nil, errNotRead
	}
	obj, ok, err := w.informer.GetStore().GetByKey(key)
	if err != nil {
		return nil, fmt.Errorf("read ConfigMap %s: %w", key, err)
	}
	if !ok {
		return nil, fmt.Errorf("not found, or without the label %s=true", BodyLabel)
	}
	return obj.(*corev1.ConfigMap).Data, nil
}

// watch makes the watched ConfigMaps exactly want ("namespace/name" keys): it starts an informer
// for each new one, calling changed on its every event, and stops those no longer wanted. The
// informers run until ctx ends or they are no longer wanted.
func (c *ConfigMapWatcher) watch(ctx context.Context, want map[string]struct{}, changed func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, w := range c.watches {
		if _, ok := want[key]; !ok {
			w.cancel()
			delete(c.watches, key)
		}
	}
	for key := range want {
		if c.watches[key] != nil {
			continue
		}
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		lw := cache.NewFilteredListWatchFromClient(c.client.CoreV1().RESTClient(), "configmaps", ns, func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + name
			o.LabelSelector = BodyLabel + "=true"
		})
		inf := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, cache.Indexers{})
		_ = inf.SetTransform(trimConfigMap)
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { changed() },
			UpdateFunc: func(any, any) { changed() },
			DeleteFunc: func(any) { changed() },
		})
		wctx, cancel := context.WithCancel(ctx)
		w := &configMapWatch{informer: inf, cancel: cancel, done: make(chan struct{})}
		c.watches[key] = w
		go func() {
			defer close(w.done)
			inf.RunWithContext(wctx)
		}()
	}
}

// wait returns when every informer started by watch has stopped; ctx must have ended.
func (c *ConfigMapWatcher) wait() {
	c.mu.Lock()
	ws := make([]*configMapWatch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	for _, w := range ws {
		<-w.done
	}
}

// trimConfigMap keeps only what responses read from a cached ConfigMap.
func trimConfigMap(obj any) (any, error) {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		cm.ManagedFields, cm.Annotations, cm.BinaryData = nil, nil, nil
	}
	return obj, nil
}
