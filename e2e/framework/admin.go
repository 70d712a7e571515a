package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lobby-http/lobby/internal/stream"
)

// AdminAudience is the token audience the interceptors' admin API accepts unless configured
// otherwise (LOBBY_ADMIN_TOKEN_AUDIENCE, the chart's adminAuth.audience).
const AdminAudience = "lobby-interceptor"

// AdminServiceAccount is the ServiceAccount, as namespace/name, of the scalers of a release named
// lobby in the namespace lobby: the identity the chart allows on the interceptors' admin API, and
// the one that interceptors started without the chart are told to allow.
const AdminServiceAccount = "lobby/lobby-scaler"

// Admin reads interceptors' admin API — /queue, the push stream, and the open endpoints — as a
// scaler does, presenting a ServiceAccount token. It is the one way tests reach the admin API, so
// that every reader authenticates alike.
type Admin struct {
	token  string
	client *http.Client
}

// NewAdmin returns an Admin that presents token; an empty token presents none (to check that
// the admin API refuses such a client).
func NewAdmin(token string) *Admin {
	return &Admin{token: token, client: &http.Client{Timeout: 10 * time.Second}}
}

// AdminFor returns an Admin presenting a fresh token of serviceAccount ("namespace/name", created
// when missing) issued for audience.
func (c *Cluster) AdminFor(ctx context.Context, serviceAccount, audience string) (*Admin, error) {
	token, err := c.ServiceAccountToken(ctx, serviceAccount, audience)
	if err != nil {
		return nil, err
	}
	return NewAdmin(token), nil
}

// ServiceAccountToken creates the ServiceAccount ("namespace/name") and its namespace when
// missing, and mints a token for it with the TokenRequest API, valid for tokenLifetime and issued
// for audiences (none: the API server's own).
func (c *Cluster) ServiceAccountToken(ctx context.Context, serviceAccount string, audiences ...string) (string, error) {
	ns, name, ok := strings.Cut(serviceAccount, "/")
	if !ok || ns == "" || name == "" {
		return "", fmt.Errorf("mint token: ServiceAccount %q is not namespace/name", serviceAccount)
	}
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", ns, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s: %w", serviceAccount, err)
	}
	tr, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](tokenLifetime)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token for service account %s: %w", serviceAccount, err)
	}
	return tr.Status.Token, nil
}

// WriteTokenFile writes token to a file of the cluster's folder named after name, as a projected
// token volume presents it, and returns its path.
func (c *Cluster) WriteTokenFile(name, token string) (string, error) {
	file := filepath.Join(c.Dir, name+".token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		return "", fmt.Errorf("write token file: %w", err)
	}
	return file, nil
}

// Token returns the token the Admin presents.
func (a *Admin) Token() string { return a.token }

// Request returns a GET of url carrying the Admin's token.
func (a *Admin) Request(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return req, nil
}

// Get sends a GET of url (an admin URL and path) with the Admin's token. The caller closes the
// body.
func (a *Admin) Get(ctx context.Context, url string) (*http.Response, error) {
	req, err := a.Request(ctx, url)
	if err != nil {
		return nil, err
	}
	return a.client.Do(req)
}

// Status sends a GET of url with the Admin's token and returns the status code and the start of
// the body.
func (a *Admin) Status(ctx context.Context, url string) (int, string, error) {
	resp, err := a.Get(ctx, url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// Queue reads an interceptor's /queue; adminURL is http://<addr>:<admin port>.
func (a *Admin) Queue(ctx context.Context, adminURL string) (map[string]stream.RouteCounts, error) {
	q := map[string]stream.RouteCounts{}
	return q, a.GetJSON(ctx, adminURL+"/queue", &q)
}

// GetJSON sends a GET of url with the Admin's token and decodes the 200 answer into v.
func (a *Admin) GetJSON(ctx context.Context, url string, v any) error {
	resp, err := a.Get(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

// Stream subscribes to an interceptor's push stream and returns the open 200 response, whose body
// is the frames (stream.NewDecoder reads them); the caller closes it, or ends ctx. A refusal is
// an error with the status and the interceptor's reason.
func (a *Admin) Stream(ctx context.Context, adminURL string) (*http.Response, error) {
	req, err := a.Request(ctx, adminURL+stream.Path)
	if err != nil {
		return nil, err
	}
	// No client timeout: the stream never ends while the interceptor runs.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return resp, nil
}

// StatusError is a refused admin request: its status code and the interceptor's reason.
type StatusError struct {
	// Code is the HTTP status code.
	Code int
	// Body is the start of the answer's body: what the interceptor says to fix.
	Body string
}

// Error says the status and the reason.
func (e *StatusError) Error() string {
	return fmt.Sprintf("status %d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}
