package stream

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	frames := []Frame{
		{Kind: KindSnapshot, Seq: 1, Interceptor: "interceptor-0", UnixMilli: 1700000000000, Routes: []RouteCounts{
			{Key: "default/app", InFlight: 3, Held: 2, Open: 1, Requests: 40, Rate: 2.5},
			{Key: "shop/cart"},
		}},
		{Kind: KindActivate, Seq: 2, Interceptor: "interceptor-0", Routes: []RouteCounts{{Key: "shop/cart", Held: 1, Requests: 1}}},
		{Kind: KindCounts, Seq: 3, Interceptor: "interceptor-0", Routes: []RouteCounts{}},
	}
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	for i := range frames {
		if err := enc.Encode(&frames[i]); err != nil {
			t.Fatalf("Encode: %v", err)
		}
	}
	dec := NewDecoder(&buf, 0)
	for i, want := range frames {
		var got Frame
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("Decode frame %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("frame %d = %+v, want %+v", i, got, want)
		}
	}
	var f Frame
	if err := dec.Decode(&f); !errors.Is(err, io.EOF) {
		t.Errorf("Decode at end = %v, want io.EOF", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name  string
		input string
		max   int
		want  error
	}{
		{"a frame from a newer protocol version is refused", `{"v":2,"kind":"counts","routes":[]}` + "\n", 0, ErrVersion},
		{"a frame with no version is refused", `{"kind":"counts","routes":[]}` + "\n", 0, ErrVersion},
		{"an unknown kind is refused", `{"v":1,"kind":"gossip","routes":[]}` + "\n", 0, ErrInvalidFrame},
		{"a route without a key is refused", `{"v":1,"kind":"counts","routes":[{"held":1}]}` + "\n", 0, ErrInvalidFrame},
		{"a negative count is refused", `{"v":1,"kind":"counts","routes":[{"key":"a/b","inFlight":-1}]}` + "\n", 0, ErrInvalidFrame},
		{"a negative rate is refused", `{"v":1,"kind":"counts","routes":[{"key":"a/b","rate":-1}]}` + "\n", 0, ErrInvalidFrame},
		{"malformed JSON is refused", `{"v":1,` + "\n", 0, ErrInvalidFrame},
		{"a frame cut off by the end of the stream is reported", `{"v":1,"kind":"counts"`, 0, io.ErrUnexpectedEOF},
		{"a frame over the size bound is refused", `{"v":1,"kind":"counts","routes":[]}` + "\n", 10, ErrFrameTooLarge},
		{"a long frame over the size bound is refused without reading it all", `{"v":1,"kind":"counts","interceptor":"` + strings.Repeat("x", 200000) + `"}` + "\n", 100000, ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			err := NewDecoder(strings.NewReader(tt.input), tt.max).Decode(&f)
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeSkipsBlankKeepAliveLines(t *testing.T) {
	var f Frame
	in := "\n\n" + `{"v":1,"kind":"counts","seq":7,"routes":[]}` + "\n"
	if err := NewDecoder(strings.NewReader(in), 0).Decode(&f); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if f.Seq != 7 {
		t.Errorf("Seq = %d, want 7", f.Seq)
	}
}

func TestActive(t *testing.T) {
	tests := []struct {
		name string
		c    RouteCounts
		want bool
	}{
		{"a route with nothing going on is idle", RouteCounts{Key: "a/b", Requests: 10}, false},
		{"a held request makes a route active", RouteCounts{Held: 1}, true},
		{"an in-flight request makes a route active", RouteCounts{InFlight: 1}, true},
		{"an open WebSocket makes a route active", RouteCounts{Open: 1}, true},
		{"a non-zero rate makes a route active", RouteCounts{Rate: 0.01}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Active(); got != tt.want {
				t.Errorf("Active() = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"snapshot","seq":1,"routes":[{"key":"a/b","held":1,"rate":0.5}]}` + "\n"))
	f.Add([]byte(`{"v":1,"kind":"activate","routes":[{"key":"a/b"}]}` + "\n\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := NewDecoder(bytes.NewReader(data), 4096)
		for range 64 {
			var fr Frame
			if err := dec.Decode(&fr); err != nil {
				return
			}
			// Whatever decodes must survive a round trip unchanged.
			var buf bytes.Buffer
			if err := NewEncoder(&buf).Encode(&fr); err != nil {
				t.Fatalf("Encode of a decoded frame: %v", err)
			}
			var again Frame
			if err := NewDecoder(&buf, 0).Decode(&again); err != nil {
				t.Fatalf("Decode of a re-encoded frame: %v", err)
			}
			if !reflect.DeepEqual(normalize(fr), normalize(again)) {
				t.Fatalf("round trip changed the frame: %+v != %+v", fr, again)
			}
		}
	})
}

// normalize makes nil and empty route lists compare equal; JSON does not keep the difference.
func normalize(f Frame) Frame {
	if len(f.Routes) == 0 {
		f.Routes = nil
	}
	return f
}
