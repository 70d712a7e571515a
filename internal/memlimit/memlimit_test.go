package memlimit

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr string
	}{
		{name: "Bytes as the downward API writes them are read as they are.", in: "536870912", want: 512 << 20},
		{name: "A binary quantity is read in bytes.", in: "512Mi", want: 512 << 20},
		{name: "A decimal quantity is read in bytes.", in: "1G", want: 1e9},
		{name: "A fraction of a byte rounds up, as Kubernetes rounds it.", in: "1.5", want: 2},
		{name: "Zero is read as zero.", in: "0", want: 0},
		{name: "A negative limit is refused.", in: "-1Mi", wantErr: "must not be negative"},
		{name: "Text that is no quantity is refused with what to write.", in: "lots", wantErr: "512Mi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name      string
		container int64
		goSet     bool
		want      Setting
	}{
		{name: "No container limit and no GOMEMLIMIT change nothing.", want: Setting{Source: SourceNone}},
		{
			name: "A container limit gives ninety percent of it.", container: 512 << 20,
			want: Setting{Source: SourceContainer, Container: 512 << 20, Soft: 483183810},
		},
		{
			name: "GOMEMLIMIT wins over a container limit.", container: 512 << 20, goSet: true,
			want: Setting{Source: SourceGOMEMLIMIT, Container: 512 << 20},
		},
		{name: "GOMEMLIMIT alone is left in effect.", goSet: true, want: Setting{Source: SourceGOMEMLIMIT}},
		{
			name: "The largest limit does not overflow.", container: math.MaxInt64,
			want: Setting{Source: SourceContainer, Container: math.MaxInt64, Soft: math.MaxInt64 / 100 * 90},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.container, tt.goSet); got != tt.want {
				t.Errorf("Decide(%d, %t) = %+v, want %+v", tt.container, tt.goSet, got, tt.want)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	// The runtime's limit is process-wide: put it back as it was for the other tests.
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const other = 3 << 30

	tests := []struct {
		name      string
		container int64
		goSet     bool
		want      Setting
		// wantRuntime is the runtime's limit afterwards.
		wantRuntime int64
	}{
		{
			name: "The container limit sets the runtime's soft limit.", container: 1 << 30,
			want: Setting{Source: SourceContainer, Container: 1 << 30, Soft: 966367620}, wantRuntime: 966367620,
		},
		{
			name: "GOMEMLIMIT leaves the runtime's limit as the runtime set it.", container: 1 << 30, goSet: true,
			want: Setting{Source: SourceGOMEMLIMIT, Container: 1 << 30, Soft: other}, wantRuntime: other,
		},
		{
			name: "No container limit changes nothing.",
			want: Setting{Source: SourceNone, Soft: other}, wantRuntime: other,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The value the runtime would have read from GOMEMLIMIT, or had before.
			debug.SetMemoryLimit(other)
			var logged []string
			log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{})
			got := Configure(tt.container, tt.goSet, log)
			if rt := debug.SetMemoryLimit(-1); rt != tt.wantRuntime {
				t.Errorf("runtime soft limit = %d, want %d", rt, tt.wantRuntime)
			}
			if got != tt.want {
				t.Errorf("Configure() = %+v, want %+v", got, tt.want)
			}
			if len(logged) != 1 || !strings.Contains(logged[0], `"source"="`+string(tt.want.Source)+`"`) {
				t.Errorf("logged %q, want one line naming source %s", logged, tt.want.Source)
			}
		})
	}
}
