package routing

import (
	"fmt"
	"mime"
	"net/http"
	"path"
	"strconv"

	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// MaxBodyBytes is the largest response body read from a ConfigMap; a larger value is answered as
// unavailable, so that one ConfigMap cannot make every interceptor hold megabytes per route.
const MaxBodyBytes = 256 << 10

// defaultConfigMapKey is the key of the body of "/" when a ConfigMap is read without a key.
const defaultConfigMapKey = "index.html"

// ConfigMaps reads the ConfigMaps that responses take their bodies from; *ConfigMapWatcher
// implements it.
type ConfigMaps interface {
	// Data returns the data of ConfigMap namespace/name, or an error saying why it cannot be read.
	Data(namespace, name string) (map[string]string, error)
}

var _ ConfigMaps = (*ConfigMapWatcher)(nil)

// newResponse prepares a static response of an InterceptorRoute once: its status (code when
// unset), headers, and body, inline or read from a ConfigMap. A body that cannot be read makes a
// 500 response that says why, so that a missing ConfigMap never crashes or hangs a request.
func newResponse(namespace string, s *v1beta1.StaticResponse, code int, configMaps ConfigMaps) *Placeholder {
	if s.StatusCode != 0 {
		code = int(s.StatusCode)
	}
	ref := s.BodyFromConfigMap
	if ref == nil {
		var body string
		if s.Body != nil {
			body = *s.Body
		}
		return response(code, s.Headers, "", []byte(body))
	}
	var data map[string]string
	err := fmt.Errorf("no ConfigMaps are watched")
	if configMaps != nil {
		data, err = configMaps.Data(namespace, ref.Name)
	}
	if err != nil {
		return unavailable(fmt.Errorf("read ConfigMap %q: %w", ref.Name, err))
	}
	if ref.Key != "" {
		return configMapResponse(code, s.Headers, ref.Name, ref.Key, data)
	}
	// Without a key, the request path names it: one response per key, chosen per request.
	p := configMapResponse(code, s.Headers, ref.Name, defaultConfigMapKey, data)
	p.byKey = make(map[string]*Placeholder, len(data))
	for k := range data {
		p.byKey[k] = configMapResponse(code, s.Headers, ref.Name, k, data)
	}
	p.notFound = response(http.StatusNotFound, nil, "", []byte("not found\n"))
	return p
}

// configMapResponse is the response whose body is key of the ConfigMap name's data.
func configMapResponse(code int, headers map[string]v1beta1.HeaderValue, name, key string, data map[string]string) *Placeholder {
	body, ok := data[key]
	switch {
	case !ok:
		return unavailable(fmt.Errorf("ConfigMap %q has no key %q", name, key))
	case len(body) > MaxBodyBytes:
		return unavailable(fmt.Errorf("key %q of ConfigMap %q holds %d bytes, more than the %d a response body may", key, name, len(body), MaxBodyBytes))
	}
	return response(code, headers, mime.TypeByExtension(path.Ext(key)), []byte(body))
}

// unavailable is the answer of a response whose body cannot be read: 500, saying why.
func unavailable(err error) *Placeholder {
	return response(http.StatusInternalServerError, nil, "", []byte("response body unavailable: "+err.Error()+"\n"))
}

// response prepares a response: canonical header names, a Content-Type (contentType, or plain
// text, when the headers give none), and the Content-Length of the body.
func response(code int, headers map[string]v1beta1.HeaderValue, contentType string, body []byte) *Placeholder {
	p := &Placeholder{StatusCode: code, Header: make(http.Header, len(headers)+2), Body: body}
	for k, v := range headers {
		p.Header.Set(k, string(v))
	}
	if p.Header.Get("Content-Type") == "" {
		if contentType == "" {
			contentType = "text/plain; charset=utf-8"
		}
		p.Header.Set("Content-Type", contentType)
	}
	p.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return p
}

// newWaitingPage resolves the waiting page of object name whose body is key ("index.html" when
// empty) of ConfigMap cmName. A body that cannot be read leaves the built-in page in place, with
// Err saying why; the Watcher rebuilds the table when the ConfigMap changes.
func newWaitingPage(namespace, name, cmName, key string, configMaps ConfigMaps) *WaitingPage {
	page := &WaitingPage{App: name}
	if key == "" {
		key = defaultConfigMapKey
	}
	var data map[string]string
	err := fmt.Errorf("no ConfigMaps are watched")
	if configMaps != nil {
		data, err = configMaps.Data(namespace, cmName)
	}
	body, ok := data[key]
	switch {
	case err != nil:
		page.Err = fmt.Errorf("read ConfigMap %q: %w", cmName, err)
	case !ok:
		page.Err = fmt.Errorf("ConfigMap %q has no key %q", cmName, key)
	case len(body) > MaxBodyBytes:
		page.Err = fmt.Errorf("key %q of ConfigMap %q holds %d bytes, more than the %d a page may", key, cmName, len(body), MaxBodyBytes)
	default:
		page.Body = []byte(body)
		page.ContentType = mime.TypeByExtension(path.Ext(key))
		if page.ContentType == "" {
			page.ContentType = "text/html; charset=utf-8"
		}
	}
	return page
}
