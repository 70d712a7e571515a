package admin

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/utils/clock"
)

// Reviewer checks a bearer token with the API server's TokenReview API for the given audience.
// A token the API server does not accept is a status with Authenticated false, not an error; an
// error means the token could not be checked at all.
type Reviewer interface {
	Review(ctx context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error)
}

// KubeReviewer is the Reviewer that creates TokenReviews (authentication.k8s.io/v1).
type KubeReviewer struct {
	// Client creates the TokenReviews.
	Client authenticationclient.TokenReviewInterface
}

var _ Reviewer = KubeReviewer{}

// Review creates a TokenReview of token for audience and returns its status.
func (k KubeReviewer) Review(ctx context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := k.Client.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("create TokenReview: %w", err)
	}
	return tr.Status, nil
}

// AuthOptions configure an Authenticator. Zero durations and sizes take the defaults named on
// each field.
type AuthOptions struct {
	// Reviewer checks tokens the cache does not know.
	Reviewer Reviewer
	// Audience is the audience a token must be issued for. Required: a token for the API server's
	// own audience must not open the admin API, or a token the scaler sends here could be replayed
	// to the API server.
	Audience string
	// Allowed are the ServiceAccounts, as "namespace/name", allowed to read the stream and /queue.
	// A valid token of any other identity gets 403.
	Allowed []string
	// TTL is how long an accepted token is trusted without a new review (1m), never past the
	// token's own expiry.
	TTL time.Duration
	// NegativeTTL is how long a rejected token is rejected without a new review (10s). It is short
	// so that a token that was not yet valid, or a ServiceAccount created a moment late, recovers
	// quickly.
	NegativeTTL time.Duration
	// CacheSize bounds the number of tokens remembered, accepted and rejected together (1024);
	// the least recently used is forgotten first.
	CacheSize int
	// ReviewTimeout bounds one TokenReview (5s).
	ReviewTimeout time.Duration
	// Clock gives the time of cache entries; nil means the real clock.
	Clock clock.PassiveClock
	// Registerer receives the authenticator's metrics.
	Registerer prometheus.Registerer
	// Log receives denials at V(1).
	Log logr.Logger
}

// Authenticator guards the admin API's count-reading endpoints: a request must carry a bearer
// ServiceAccount token issued for the configured audience (checked with a TokenReview, cached),
// and the ServiceAccount must be on the allow-list.
type Authenticator struct {
	opts    AuthOptions
	allowed map[string]bool
	cache   *cache.LRUExpireCache
	flight  singleflight.Group
	results *prometheus.CounterVec
}

// verdict is the cached outcome of one review.
type verdict struct {
	// user is the authenticated user name; empty when the token was rejected.
	user string
	// reason says why a rejected token was rejected.
	reason string
}

// The outcomes counted by lobby_interceptor_admin_auth_total.
const (
	resultAllowed     = "allowed"
	resultMissing     = "missing"
	resultRejected    = "rejected"
	resultForbidden   = "forbidden"
	resultUnavailable = "unavailable"
)

// NewAuthenticator returns an Authenticator configured by o, with its metrics registered.
func NewAuthenticator(o AuthOptions) (*Authenticator, error) {
	if o.Reviewer == nil {
		return nil, errors.New("create admin authenticator: no reviewer")
	}
	if o.Audience == "" {
		return nil, errors.New("create admin authenticator: no audience")
	}
	if o.TTL <= 0 {
		o.TTL = time.Minute
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 10 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 1024
	}
	if o.ReviewTimeout <= 0 {
		o.ReviewTimeout = 5 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	a := &Authenticator{
		opts:    o,
		allowed: map[string]bool{},
		cache:   cache.NewLRUExpireCacheWithClock(o.CacheSize, o.Clock),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lobby_interceptor_admin_auth_total",
			Help: "Requests to the admin API's /stream and /queue by outcome (allowed, missing, rejected, forbidden, unavailable) and whether a cached review decided it.",
		}, []string{"result", "cached"}),
	}
	for _, sa := range o.Allowed {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("create admin authenticator: allowed ServiceAccount %q is not namespace/name", sa)
		}
		a.allowed[ServiceAccountUser(ns, name)] = true
	}
	if err := o.Registerer.Register(a.results); err != nil {
		return nil, fmt.Errorf("register admin auth metrics: %w", err)
	}
	return a, nil
}

// authError is a denied request: the status to answer and a body that says what to fix.
type authError struct {
	code int
	msg  string
}

func (e *authError) Error() string { return e.msg }

// Guard returns h behind the authenticator: 401 without a bearer token or with one the API
// server rejects for the audience, 403 for a valid token of a ServiceAccount not allowed, 503
// when the token cannot be checked (the API server is unreachable): never served unchecked.
func (a *Authenticator) Guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.Authorize(r); err != nil {
			writeAuthError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Authorize checks the request's bearer token and identity. The error is an *authError that
// carries the status code to answer.
func (a *Authenticator) Authorize(r *http.Request) error {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		a.count(resultMissing, false)
		return &authError{http.StatusUnauthorized, fmt.Sprintf(
			"no bearer token: send \"Authorization: Bearer <token>\" with a ServiceAccount token issued for the audience %q", a.opts.Audience)}
	}
	key := tokenKey(token)
	var v verdict
	cached := false
	if c, ok := a.cache.Get(key); ok {
		v, cached = c.(verdict), true
	} else {
		res, err, _ := a.flight.Do(key, func() (any, error) { return a.review(r.Context(), key, token) })
		if err != nil {
			a.count(resultUnavailable, false)
			a.opts.Log.V(1).Info("admin token review failed", "remote", r.RemoteAddr, "error", err.Error())
			return &authError{http.StatusServiceUnavailable, "cannot check the token now: " + err.Error()}
		}
		v = res.(verdict)
	}
	if v.user == "" {
		a.count(resultRejected, cached)
		a.opts.Log.V(1).Info("admin token rejected", "remote", r.RemoteAddr, "reason", v.reason)
		return &authError{http.StatusUnauthorized, fmt.Sprintf(
			"token rejected (%s): send a valid ServiceAccount token issued for the audience %q", v.reason, a.opts.Audience)}
	}
	if !a.allowed[v.user] {
		a.count(resultForbidden, cached)
		a.opts.Log.V(1).Info("admin identity not allowed", "remote", r.RemoteAddr, "user", v.user)
		return &authError{http.StatusForbidden, fmt.Sprintf(
			"%s may not read the interceptor's counts: only the ServiceAccounts in LOBBY_ADMIN_ALLOWED_SERVICE_ACCOUNTS may", v.user)}
	}
	a.count(resultAllowed, cached)
	return nil
}

// review asks the Reviewer about token and caches the verdict: an accepted token until the TTL
// or its expiry, whichever is first; a rejected one for the negative TTL. Errors are not cached.
func (a *Authenticator) review(ctx context.Context, key, token string) (verdict, error) {
	// The review is not cut short by the one client that started it going away: the others
	// waiting on the same token share it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.ReviewTimeout)
	defer cancel()
	st, err := a.opts.Reviewer.Review(ctx, token, a.opts.Audience)
	if err != nil {
		return verdict{}, err
	}
	var v verdict
	switch {
	case !st.Authenticated:
		v.reason = "not authenticated"
		if st.Error != "" {
			v.reason = st.Error
		}
	case !slices.Contains(st.Audiences, a.opts.Audience):
		// An authenticator that ignores audiences answers none: the token may be one issued for
		// the API server, which must not open the admin API.
		v.reason = fmt.Sprintf("not issued for the audience %q", a.opts.Audience)
	case st.User.Username == "":
		v.reason = "no user name"
	default:
		v.user = st.User.Username
	}
	if v.user == "" {
		a.cache.Add(key, v, a.opts.NegativeTTL)
		return v, nil
	}
	ttl := a.opts.TTL
	if exp, ok := expiry(token); ok {
		ttl = min(ttl, exp.Sub(a.opts.Clock.Now()))
	}
	if ttl > 0 {
		a.cache.Add(key, v, ttl)
	}
	return v, nil
}

func (a *Authenticator) count(result string, cached bool) {
	c := "false"
	if cached {
		c = "true"
	}
	a.results.WithLabelValues(result, c).Inc()
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// tokenKey is the cache key of a token: its hash, so that the cache holds no credential.
func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return string(sum[:])
}

// expiry reads the exp claim of a JWT without verifying it (the TokenReview verified it): it
// only shortens how long the verdict is cached, so that a cached token never outlives itself.
func expiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// writeAuthError answers a denied request with its status and a plain-text body that says what
// to fix.
func writeAuthError(w http.ResponseWriter, err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		ae = &authError{http.StatusServiceUnavailable, err.Error()}
	}
	switch ae.code {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="lobby-interceptor-admin"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	writeText(w, ae.code, ae.msg+"\n")
}

// ServiceAccountUser is the user name the API server gives a ServiceAccount's tokens.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}
