package routing

import (
	"net/http"
	"strings"

	"github.com/lobby-http/lobby/internal/httpso"
)

// fallback holds the less specific host levels a request may fall through to when the routes of
// its host level do not match it, each reduced to the routes of the namespaces the level's owner
// allows, most specific first.
type fallback struct {
	levels []*hostRoutes
}

// match returns the first match among the levels, as lookupHost would find it.
func (f *fallback) match(path string, header http.Header) (*Route, bool) {
	for _, h := range f.levels {
		if r, static := h.match(path, header); r != nil {
			return r, static
		}
	}
	return nil, false
}

// sealLevels sets the fallback of every exact and wildcard level (keyed as in Table) whose less
// specific levels hold routes of a namespace that the level's owner does not allow: a request for
// an owned host is served by the routes of its owner and the namespaces it allows, or not at all.
// Levels whose fall-through needs no filtering keep a nil fallback, and lookups walk the table as
// before. Filtered levels are shared between the levels of one owner with the same fall-through.
func sealLevels(exact, wildcard map[string]*hostRoutes, catchAll *hostRoutes, owners *httpso.Ownership) {
	shared := map[string]*fallback{}
	// allowed memoises hostRoutes.allows per level and owner: many hosts of one owner share the
	// same wildcard and catch-all levels.
	type levelOwner struct {
		level *hostRoutes
		owner string
	}
	allowed := map[levelOwner]bool{}
	seal := func(key string, h *hostRoutes) {
		own := owners.Of(key)
		if own == nil {
			return
		}
		var chain []*hostRoutes
		var names []string
		for _, c := range httpso.Covering(key) {
			if w := wildcard[c[2:]]; w != nil {
				chain = append(chain, w)
				names = append(names, c)
			}
		}
		if catchAll != nil {
			chain = append(chain, catchAll)
			names = append(names, "")
		}
		ownerKey := own.Namespace + "|" + strings.Join(own.Allowed, ",")
		open := true
		for _, l := range chain {
			k := levelOwner{l, ownerKey}
			ok, seen := allowed[k]
			if !seen {
				ok = l.allows(own)
				allowed[k] = ok
			}
			open = open && ok
		}
		if open {
			return
		}
		id := ownerKey + "|" + strings.Join(names, ",")
		if f := shared[id]; f != nil {
			h.fallback = f
			return
		}
		f := &fallback{}
		for _, l := range chain {
			if r := l.restrictedTo(own); r != nil {
				f.levels = append(f.levels, r)
			}
		}
		shared[id] = f
		h.fallback = f
	}
	for k, h := range exact {
		seal(k, h)
	}
	for k, h := range wildcard {
		seal("*."+k, h)
	}
}

// allows reports whether every route of the level belongs to a namespace own allows.
func (h *hostRoutes) allows(own *httpso.Owner) bool {
	for _, p := range h.paths {
		for _, c := range p.candidates {
			if !own.Allows(c.route.Namespace) {
				return false
			}
		}
	}
	return true
}

// restrictedTo returns a copy of the level with the routes of the namespaces own allows, or nil when none
// is left.
func (h *hostRoutes) restrictedTo(own *httpso.Owner) *hostRoutes {
	out := &hostRoutes{}
	for _, p := range h.paths {
		kept := pathRoutes{prefix: p.prefix}
		for _, c := range p.candidates {
			if own.Allows(c.route.Namespace) {
				kept.candidates = append(kept.candidates, c)
			}
		}
		if len(kept.candidates) > 0 {
			out.paths = append(out.paths, kept)
		}
	}
	if len(out.paths) == 0 {
		return nil
	}
	out.finish()
	return out
}
