package proxy

import (
	"net/http"
	"testing"
)

func TestWantsPageReadsTheAcceptWeights(t *testing.T) {
	tests := []struct {
		name, method string
		accept       []string
		want         bool
	}{
		{"a browser loading a page", http.MethodGet, []string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, true},
		{"Chrome's navigation, images at the same weight", http.MethodGet,
			[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"}, true},
		{"a HEAD as a browser sends it", http.MethodHead, []string{"text/html"}, true},
		{"XHTML alone", http.MethodGet, []string{"application/xhtml+xml"}, true},
		{"case and spaces do not matter", http.MethodGet, []string{" Text/HTML ; Q=1 , */*;q=0.1"}, true},
		{"Accept split over two header lines", http.MethodGet, []string{"application/json;q=0.5", "text/html"}, true},
		{"*/* alone is no preference", http.MethodGet, []string{"*/*"}, false},
		{"text/* is no preference for HTML", http.MethodGet, []string{"text/*"}, false},
		{"no Accept header", http.MethodGet, nil, false},
		{"JSON", http.MethodGet, []string{"application/json"}, false},
		{"JSON preferred over HTML", http.MethodGet, []string{"text/html;q=0.5, application/json"}, false},
		{"HTML refused with q=0", http.MethodGet, []string{"text/html;q=0, */*"}, false},
		{"HTML preferred over JSON by weight", http.MethodGet, []string{"application/json;q=0.4, text/html;q=0.9"}, true},
		{"a malformed weight drops its range", http.MethodGet, []string{"text/html;q=2, application/json;q=0.1"}, false},
		{"a weight with too many decimals drops its range", http.MethodGet, []string{"text/html;q=0.12345"}, false},
		{"a POST of a form from a browser", http.MethodPost, []string{"text/html"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(tt.method, "http://shop.example.com/", nil)
			r.Header["Accept"] = tt.accept
			if got := wantsPage(r); got != tt.want {
				t.Errorf("wantsPage(%s %q) = %v, want %v", tt.method, tt.accept, got, tt.want)
			}
		})
	}
}
