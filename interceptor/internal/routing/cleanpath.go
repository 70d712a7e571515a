package routing

import (
	"path"
	"strings"
)

// cleanPath returns the path a request is routed on: p with its dot segments resolved and runs of
// slashes merged, as nginx normalises a URI before it matches locations. Without that, a request
// for /admin/%2E%2E/public (which Go decodes to /admin/../public) would be routed to /admin's app
// while an ingress in front, having normalised it, applied the rules of /public. A trailing slash
// is kept, and ".." never climbs above the root. The request itself is forwarded unchanged.
//
// Paths that need no cleaning — nearly all of them — are returned as they are, without
// allocating.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] == '/' && !needsCleaning(p) {
		return p
	}
	c := path.Clean("/" + p)
	if c != "/" && (p[len(p)-1] == '/' || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) {
		c += "/"
	}
	return c
}

// needsCleaning reports whether p, which starts with a slash, has an empty, "." or ".." segment.
func needsCleaning(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		// p[i] starts a segment; look at what follows.
		rest := p[i+1:]
		switch {
		case len(rest) > 0 && rest[0] == '/':
			return true
		case rest == "." || rest == "..",
			strings.HasPrefix(rest, "./"), strings.HasPrefix(rest, "../"):
			return true
		}
	}
	return false
}
