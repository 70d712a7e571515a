package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lobby-http/lobby/internal/stream"
)

const testAudience = "lobby-interceptor"

// fakeReviewer answers reviews from a table of tokens and counts the reviews per token.
type fakeReviewer struct {
	mu      sync.Mutex
	users   map[string]string // token → user name of an accepted token
	err     error             // when set, every review fails with it
	noAud   bool              // when set, accepted tokens come back without audiences
	reviews map[string]int
}

var _ Reviewer = (*fakeReviewer)(nil)

func newFakeReviewer() *fakeReviewer {
	return &fakeReviewer{users: map[string]string{}, reviews: map[string]int{}}
}

func (f *fakeReviewer) Review(_ context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reviews[token]++
	if f.err != nil {
		return authenticationv1.TokenReviewStatus{}, f.err
	}
	user, ok := f.users[token]
	if !ok {
		return authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}, nil
	}
	st := authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: user}}
	if !f.noAud {
		st.Audiences = []string{audience}
	}
	return st, nil
}

func (f *fakeReviewer) count(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews[token]
}

// jwt returns a token shaped like a JWT whose exp claim is exp (no claim when zero).
func jwt(name string, exp time.Time) string {
	claims := `{"sub":"` + name + `"}`
	if !exp.IsZero() {
		claims = fmt.Sprintf(`{"sub":%q,"exp":%d}`, name, exp.Unix())
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".sig"
}

type authFixture struct {
	rev   *fakeReviewer
	clock *clocktesting.FakeClock
	auth  *Authenticator
	reg   *prometheus.Registry
	h     http.Handler
}

func newAuthFixture(t *testing.T, o AuthOptions) *authFixture {
	t.Helper()
	f := &authFixture{rev: newFakeReviewer(), clock: clocktesting.NewFakeClock(time.Unix(1700000000, 0)), reg: prometheus.NewPedanticRegistry()}
	o.Reviewer, o.Audience, o.Clock, o.Registerer, o.Log = f.rev, testAudience, f.clock, f.reg, logr.Discard()
	if o.Allowed == nil {
		o.Allowed = []string{"lobby/lobby-scaler"}
	}
	var err error
	if f.auth, err = NewAuthenticator(o); err != nil {
		t.Fatal(err)
	}
	f.h = f.auth.Guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "counts") }))
	return f
}

// do sends one request with the given Authorization header (none when empty).
func (f *authFixture) do(authorization string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/queue", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestAuthenticatorAnswers(t *testing.T) {
	scaler := jwt("scaler", time.Time{})
	other := jwt("other", time.Time{})
	tests := []struct {
		name          string
		authorization string
		reviewErr     error
		noAudiences   bool
		wantCode      int
		wantBody      string
		wantHeader    [2]string
	}{
		{"a request without a token gets 401 and names the audience", "", nil, false, http.StatusUnauthorized, `audience "lobby-interceptor"`, [2]string{"WWW-Authenticate", `Bearer realm="lobby-interceptor-admin"`}},
		{"a scheme other than Bearer gets 401", "Basic " + scaler, nil, false, http.StatusUnauthorized, "no bearer token", [2]string{}},
		{"a token the API server rejects gets 401 with its reason", "Bearer garbage", nil, false, http.StatusUnauthorized, "invalid bearer token", [2]string{}},
		{"the allowed ServiceAccount is served", "Bearer " + scaler, nil, false, http.StatusOK, "counts", [2]string{}},
		{"the scheme is case-insensitive", "bearer " + scaler, nil, false, http.StatusOK, "counts", [2]string{}},
		{"a valid token of another ServiceAccount gets 403 naming it", "Bearer " + other, nil, false, http.StatusForbidden, "system:serviceaccount:apps:other may not read", [2]string{}},
		{"a failed review gets 503, never the counts", "Bearer " + scaler, errors.New("connection refused"), false, http.StatusServiceUnavailable, "cannot check the token now: connection refused", [2]string{"Retry-After", "1"}},
		{"a token accepted without the audience gets 401", "Bearer " + scaler, nil, true, http.StatusUnauthorized, `not issued for the audience "lobby-interceptor"`, [2]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthFixture(t, AuthOptions{})
			f.rev.users[scaler] = "system:serviceaccount:lobby:lobby-scaler"
			f.rev.users[other] = "system:serviceaccount:apps:other"
			f.rev.err, f.rev.noAud = tt.reviewErr, tt.noAudiences
			w := f.do(tt.authorization)
			if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("answer = %d %q, want %d containing %q", w.Code, w.Body.String(), tt.wantCode, tt.wantBody)
			}
			if k := tt.wantHeader[0]; k != "" && w.Header().Get(k) != tt.wantHeader[1] {
				t.Errorf("header %s = %q, want %q", k, w.Header().Get(k), tt.wantHeader[1])
			}
		})
	}
}

func TestAuthenticatorCache(t *testing.T) {
	const user = "system:serviceaccount:lobby:lobby-scaler"
	t.Run("an accepted token is reviewed once within the TTL and again after it", func(t *testing.T) {
		f := newAuthFixture(t, AuthOptions{TTL: time.Minute})
		tok := jwt("scaler", time.Time{})
		f.rev.users[tok] = user
		for range 3 {
			if w := f.do("Bearer " + tok); w.Code != http.StatusOK {
				t.Fatalf("answer = %d %q", w.Code, w.Body.String())
			}
		}
		if n := f.rev.count(tok); n != 1 {
			t.Errorf("reviews within the TTL = %d, want 1", n)
		}
		f.clock.Step(time.Minute + time.Second)
		f.do("Bearer " + tok)
		if n := f.rev.count(tok); n != 2 {
			t.Errorf("reviews after the TTL = %d, want 2", n)
		}
		if v := testutil.ToFloat64(f.auth.results.WithLabelValues(resultAllowed, "true")); v != 2 {
			t.Errorf("cached allowed = %v, want 2", v)
		}
	})
	t.Run("an accepted token is not trusted past its own expiry", func(t *testing.T) {
		f := newAuthFixture(t, AuthOptions{TTL: time.Hour})
		tok := jwt("scaler", f.clock.Now().Add(10*time.Second))
		f.rev.users[tok] = user
		f.do("Bearer " + tok)
		f.clock.Step(5 * time.Second)
		f.do("Bearer " + tok)
		if n := f.rev.count(tok); n != 1 {
			t.Errorf("reviews before expiry = %d, want 1", n)
		}
		f.clock.Step(6 * time.Second)
		delete(f.rev.users, tok) // The API server rejects it now.
		if w := f.do("Bearer " + tok); w.Code != http.StatusUnauthorized {
			t.Errorf("answer after expiry = %d, want 401", w.Code)
		}
		if n := f.rev.count(tok); n != 2 {
			t.Errorf("reviews after expiry = %d, want 2", n)
		}
	})
	t.Run("a rejected token is rejected from the cache for the negative TTL only", func(t *testing.T) {
		f := newAuthFixture(t, AuthOptions{NegativeTTL: 10 * time.Second})
		tok := jwt("late", time.Time{})
		for range 3 {
			if w := f.do("Bearer " + tok); w.Code != http.StatusUnauthorized {
				t.Fatalf("answer = %d, want 401", w.Code)
			}
		}
		if n := f.rev.count(tok); n != 1 {
			t.Errorf("reviews within the negative TTL = %d, want 1", n)
		}
		f.rev.users[tok] = user // The ServiceAccount exists now.
		f.clock.Step(11 * time.Second)
		if w := f.do("Bearer " + tok); w.Code != http.StatusOK {
			t.Errorf("answer after the negative TTL = %d, want 200", w.Code)
		}
	})
	t.Run("a failed review is not cached", func(t *testing.T) {
		f := newAuthFixture(t, AuthOptions{})
		tok := jwt("scaler", time.Time{})
		f.rev.users[tok] = user
		f.rev.err = errors.New("timeout")
		if w := f.do("Bearer " + tok); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("answer = %d, want 503", w.Code)
		}
		f.rev.err = nil
		if w := f.do("Bearer " + tok); w.Code != http.StatusOK {
			t.Errorf("answer once the API server answers = %d, want 200", w.Code)
		}
		if n := f.rev.count(tok); n != 2 {
			t.Errorf("reviews = %d, want 2", n)
		}
	})
	t.Run("the cache is bounded: the least recently used token is forgotten", func(t *testing.T) {
		f := newAuthFixture(t, AuthOptions{CacheSize: 2})
		toks := []string{jwt("a", time.Time{}), jwt("b", time.Time{}), jwt("c", time.Time{})}
		for _, tok := range toks {
			f.rev.users[tok] = user
			f.do("Bearer " + tok)
		}
		f.do("Bearer " + toks[2])
		f.do("Bearer " + toks[0])
		if got := []int{f.rev.count(toks[0]), f.rev.count(toks[2])}; got[0] != 2 || got[1] != 1 {
			t.Errorf("reviews of the oldest and newest = %v, want [2 1]", got)
		}
		if n := len(f.auth.cache.Keys()); n > 2 {
			t.Errorf("cache holds %d tokens, want at most 2", n)
		}
	})
}

func TestNewAuthenticatorRefusesBadAllowList(t *testing.T) {
	for _, sa := range []string{"lobby", "/scaler", "lobby/", "a/b/c"} {
		_, err := NewAuthenticator(AuthOptions{Reviewer: newFakeReviewer(), Audience: testAudience, Allowed: []string{sa}, Registerer: prometheus.NewRegistry()})
		if err == nil || !strings.Contains(err.Error(), "not namespace/name") {
			t.Errorf("NewAuthenticator(allowed %q) error = %v, want it to say namespace/name", sa, err)
		}
	}
}

// TestServerGuardsCountsOnly checks that the admin server asks for a token on /queue and the
// stream, and on nothing else.
func TestServerGuardsCountsOnly(t *testing.T) {
	f := newAuthFixture(t, AuthOptions{})
	tok := jwt("scaler", time.Time{})
	f.rev.users[tok] = "system:serviceaccount:lobby:lobby-scaler"
	reg := prometheus.NewPedanticRegistry()
	acts, err := NewActivations(reg)
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{}
	st, err := NewStream(StreamOptions{Source: src, Activations: acts, Interval: time.Second, Clock: f.clock, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(New(Options{Source: src, Stream: st, Gatherer: reg, Clock: f.clock, Auth: f.auth}).Handler())
	t.Cleanup(ts.Close)
	for _, tt := range []struct {
		path string
		want int
	}{{"/queue", http.StatusUnauthorized}, {stream.Path, http.StatusUnauthorized}, {"/metrics", http.StatusOK}, {"/livez", http.StatusOK}, {"/readyz", http.StatusOK}} {
		if code, body, _ := get(t, ts.URL+tt.path); code != tt.want {
			t.Errorf("GET %s without a token = %d %q, want %d", tt.path, code, body, tt.want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/queue", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /queue with the scaler's token = %d, want 200", resp.StatusCode)
	}
}
