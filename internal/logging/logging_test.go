package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Level
		wantErr bool
	}{
		{name: "Info is accepted.", in: "info", want: LevelInfo},
		{name: "Case and surrounding space are ignored.", in: " DEBUG ", want: LevelDebug},
		{name: "Error is accepted.", in: "error", want: LevelError},
		{name: "A numeric verbosity is rejected.", in: "2", wantErr: true},
		{name: "An empty level is rejected.", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLevel(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLevel(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseLevel(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Format
		wantErr bool
	}{
		{name: "JSON is accepted.", in: "json", want: FormatJSON},
		{name: "Console is accepted in any case.", in: "Console", want: FormatConsole},
		{name: "An unknown format is rejected.", in: "logfmt", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFormat(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFormat(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseFormat(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name      string
		level     Level
		wantLines []string // messages expected, in order
	}{
		{name: "Info writes V(0) and errors but not V(1).", level: LevelInfo, wantLines: []string{"info", "err"}},
		{name: "Debug writes V(1) too.", level: LevelDebug, wantLines: []string{"info", "debug", "err"}},
		{name: "Error writes only errors.", level: LevelError, wantLines: []string{"err"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := New(Options{Level: tt.level, Output: &buf})
			log.Info("info", "someKey", 1)
			log.V(1).Info("debug")
			log.Error(errors.New("boom"), "err")
			var got []string
			for line := range strings.Lines(buf.String()) {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("line %q is not JSON: %v", line, err)
				}
				got = append(got, m["msg"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tt.wantLines, ",") {
				t.Errorf("messages = %v, want %v", got, tt.wantLines)
			}
		})
	}
}

func TestNewConsole(t *testing.T) {
	var buf bytes.Buffer
	New(Options{Format: FormatConsole, Output: &buf}).Info("hello", "someKey", "v")
	if s := buf.String(); !strings.Contains(s, "INFO") || !strings.Contains(s, "hello") || strings.HasPrefix(s, "{") {
		t.Errorf("console line = %q, want a human-readable line", s)
	}
}
