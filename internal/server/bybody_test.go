package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestByBody(t *testing.T) {
	request := func(proto int, body io.Reader, chunked bool) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", body)
		r.ProtoMajor = proto
		if chunked {
			r.TransferEncoding = []string{"chunked"}
			r.ContentLength = -1
		}
		return r
	}
	tests := []struct {
		name        string
		r           *http.Request
		wantGuarded bool
	}{
		{"an HTTP/1.1 request without a body goes straight to the handler", request(1, nil, false), false},
		{"an HTTP/1.1 request with a body goes through the wrappers", request(1, strings.NewReader("x"), false), true},
		{"a chunked HTTP/1.1 request goes through the wrappers", request(1, strings.NewReader("x"), true), true},
		{"an HTTP/2 request without a body goes through the wrappers", request(2, nil, false), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			plain := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got = "plain" })
			guarded := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got = "guarded" })
			ByBody(plain, guarded).ServeHTTP(httptest.NewRecorder(), tt.r)
			if want := map[bool]string{false: "plain", true: "guarded"}[tt.wantGuarded]; got != want {
				t.Errorf("served by %s, want %s", got, want)
			}
		})
	}
}
