package routing

import (
	"errors"
	"strings"
	"testing"

	"github.com/lobby-http/lobby/internal/httpso"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
	"github.com/lobby-http/lobby/operator/api/v1beta1"
)

// pageConfigMaps serves ConfigMap data keyed "namespace/name", or err for every read.
type pageConfigMaps struct {
	data map[string]map[string]string
	err  error
}

func (f pageConfigMaps) Data(namespace, name string) (map[string]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	d, ok := f.data[namespace+"/"+name]
	if !ok {
		return nil, errors.New("not found")
	}
	return d, nil
}

func TestWaitingPageBodies(t *testing.T) {
	big := strings.Repeat("x", MaxBodyBytes+1)
	tests := []struct {
		name, key string
		cms       pageConfigMaps
		wantBody  string
		wantType  string
		wantErr   string
	}{
		{"index.html when no key is named", "", pageConfigMaps{data: map[string]map[string]string{"ns/pages": {"index.html": "<p>hi</p>"}}},
			"<p>hi</p>", "text/html; charset=utf-8", ""},
		{"a named key, typed by its extension", "wait.txt", pageConfigMaps{data: map[string]map[string]string{"ns/pages": {"wait.txt": "hold on"}}},
			"hold on", "text/plain; charset=utf-8", ""},
		{"a missing ConfigMap leaves the built-in page", "", pageConfigMaps{}, "", "", `read ConfigMap "pages"`},
		{"a missing key leaves the built-in page", "a.html", pageConfigMaps{data: map[string]map[string]string{"ns/pages": {}}},
			"", "", `has no key "a.html"`},
		{"a page over the size cap leaves the built-in page", "", pageConfigMaps{data: map[string]map[string]string{"ns/pages": {"index.html": big}}},
			"", "", "more than the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newWaitingPage("ns", "app", "pages", tt.key, tt.cms)
			if p.App != "app" {
				t.Errorf("App = %q", p.App)
			}
			if tt.wantErr != "" {
				if p.Err == nil || !strings.Contains(p.Err.Error(), tt.wantErr) || p.Body != nil {
					t.Errorf("page = %+v, want the built-in page and an error with %q", p, tt.wantErr)
				}
				return
			}
			if p.Err != nil || string(p.Body) != tt.wantBody || p.ContentType != tt.wantType {
				t.Errorf("page = %q %q %v, want %q %q", p.Body, p.ContentType, p.Err, tt.wantBody, tt.wantType)
			}
		})
	}
}

func TestWaitingPageConfigMapsAreWatched(t *testing.T) {
	hso := object("app", 0, []string{"a.test"}, nil)
	hso.Spec.ColdStart = &v1alpha1.ColdStartSpec{Mode: v1alpha1.ColdStartModeAuto,
		WaitingPage: &v1alpha1.WaitingPageSpec{BodyFromConfigMap: &v1alpha1.ConfigMapKeyRef{Name: "hso-pages"}}}
	ir := asInterceptorRoute(object("route", 1, []string{"b.test"}, nil), false)
	ir.Spec.ColdStart = &v1beta1.ColdStartSpec{Mode: v1beta1.ColdStartModeAuto,
		WaitingPage: &v1beta1.WaitingPage{BodyFromConfigMap: &v1beta1.ConfigMapKeyRef{Name: "ir-pages"}}}
	got := configMapsRead([]*httpso.Object{httpso.FromHTTPScaledObject(hso), httpso.FromInterceptorRoute(ir)})
	for _, want := range []string{"ns/hso-pages", "ns/ir-pages"} {
		if _, ok := got[want]; !ok {
			t.Errorf("ConfigMaps watched = %v, want %s among them: its changes must rebuild the table", got, want)
		}
	}
}

func TestInterceptorRouteModes(t *testing.T) {
	body := "warming"
	tests := []struct {
		name   string
		cs     *v1beta1.ColdStartSpec
		global ColdStartMode
		want   ColdStartMode
	}{
		{"a placeholder without a mode answers at once, as in the add-on",
			&v1beta1.ColdStartSpec{Placeholder: &v1beta1.ColdStartPlaceholder{Response: &v1beta1.StaticResponse{Body: &body}}},
			ColdStartHold, ColdStartPlaceholder},
		{"mode Hold keeps a placeholder for timed-out requests only",
			&v1beta1.ColdStartSpec{Mode: v1beta1.ColdStartModeHold, Placeholder: &v1beta1.ColdStartPlaceholder{Response: &v1beta1.StaticResponse{Body: &body}}},
			ColdStartAuto, ColdStartHold},
		{"no coldStart takes the global default", nil, ColdStartAuto, ColdStartAuto},
		{"mode Auto", &v1beta1.ColdStartSpec{Mode: v1beta1.ColdStartModeAuto}, ColdStartHold, ColdStartAuto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ir := asInterceptorRoute(object("route", 1, []string{"b.test"}, nil), false)
			ir.Spec.ColdStart = tt.cs
			mode, page := interceptorRouteMode(ir, nil, Defaults{ColdStartMode: tt.global})
			if mode != tt.want || (mode == ColdStartHold) != (page == nil) {
				t.Errorf("mode %s page %+v, want %s", mode, page, tt.want)
			}
		})
	}
}

func TestParseColdStartMode(t *testing.T) {
	for _, s := range []string{"", "Hold", "Placeholder", "Auto"} {
		m, err := ParseColdStartMode(s)
		if err != nil || (s != "" && m.String() != s) {
			t.Errorf("ParseColdStartMode(%q) = %s, %v", s, m, err)
		}
	}
	if _, err := ParseColdStartMode("auto"); err == nil || !strings.Contains(err.Error(), "Hold, Placeholder and Auto") {
		t.Errorf("a misspelt mode is accepted or not explained: %v", err)
	}
}
