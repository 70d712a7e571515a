package routing

import "testing"

func TestCleanPath(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"a clean path is kept", "/api/v1/items", "/api/v1/items"},
		{"a trailing slash is kept", "/api/", "/api/"},
		{"the root is kept", "/", "/"},
		{"an empty path is the root", "", "/"},
		{"a path without a leading slash gets one", "api/x", "/api/x"},
		{"a dot-dot segment climbs one level", "/admin/../public", "/public"},
		{"a dot-dot segment at the end climbs and keeps the slash", "/public/x/..", "/public/"},
		{"a dot segment is dropped", "/admin/./x", "/admin/x"},
		{"a trailing dot segment leaves a slash", "/admin/.", "/admin/"},
		{"runs of slashes merge", "//admin///x", "/admin/x"},
		{"dot-dot never climbs above the root", "/../../admin", "/admin"},
		{"dots inside a segment are not dot segments", "/a..b/.well-known/x.", "/a..b/.well-known/x."},
		{"a segment of three dots is a name", "/.../x", "/.../x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := cleanPath(tc.in); got != tc.want {
				t.Errorf("cleanPath(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestCleanPathAllocatesNothingForACleanPath(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = cleanPath("/api/v1/items/42") }); n != 0 {
		t.Errorf("cleanPath of a clean path made %v allocations, want 0", n)
	}
}
