// Command demo shows lobby holding a request while an app scales from zero, on a local control
// plane: it starts the cluster of e2e/framework (kube-apiserver, kube-controller-manager, KEDA and
// the process kubelet) in a private network namespace, installs lobby from its chart, deploys a
// sample app at zero replicas with an HTTPScaledObject, sends one request, prints the timeline of
// the cold start, and waits for KEDA to scale the idle app back to zero. Without a terminal (CI,
// `make fresh-demo`) it then stops everything. With a terminal on its standard input it keeps the
// cluster up and prints two URLs on the machine's loopback, relayed into the namespace (see
// netns.Expose): the app through the interceptor, and the interceptor's status page; Ctrl-C then
// stops everything.
//
// Run it with `make demo`, which builds what is missing first. Ctrl-C stops it cleanly at any
// point. It needs root (network namespaces).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lobby-http/lobby/e2e/apps"
	"github.com/lobby-http/lobby/e2e/coldstart"
	"github.com/lobby-http/lobby/e2e/deploy"
	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/framework/poll"
	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/operator/api/v1alpha1"
)

// The sample app.
const (
	appNamespace = "demo"
	appName      = "hello"
	appHost      = "hello.example.com"
	// browserHost is a second host of the app for a browser on the machine: browsers and curl
	// resolve every name under .localhost to the loopback address, where the relay listens.
	browserHost = "hello.localhost"
	// cooldown is the app's scaledownPeriod: how long it stays up once idle.
	cooldown = 15
)

// Ports the interactive ending would like on the machine's loopback; others are used when taken.
const (
	appPort    = 8080
	statusPort = 9090
)

func main() {
	os.Exit(netns.RunInside(func() int {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, os.Stdout); err != nil {
			if ctx.Err() != nil {
				fmt.Println("\ninterrupted; everything the demo started has been stopped")
				return 130
			}
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
			return 1
		}
		return 0
	}))
}

// run is the demo, printing to out.
func run(ctx context.Context, out io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("== starting a local Kubernetes control plane, KEDA and the process kubelet")
	c, err := framework.Start(ctx, framework.Options{LogWriter: out})
	if err != nil {
		return fmt.Errorf("start the cluster: %w", err)
	}
	defer func() {
		say("== stopping everything")
		// Stop kills what does not exit within its bound, so nothing is left either way; a slow
		// exit (kube-apiserver under a loaded machine) is reported, as framework.RunSuite does,
		// not taken for a failure of the demo.
		if serr := c.Stop(); serr != nil {
			say("   warning: %v", serr)
		}
	}()
	// A failure prints the components' logs: they say why.
	defer func() {
		if err != nil && ctx.Err() == nil {
			c.DumpLogs(printer{out})
		}
	}()

	say("== installing lobby from charts/lobby (interceptor, scaler, operator as processes)")
	start := time.Now()
	l, err := deploy.Install(ctx, c, deploy.Options{
		ValuesFiles: []string{filepath.Join(sourceDir(), "values.yaml")},
		Replicas:    map[string]int{"interceptor": 1, "scaler": 1, "operator": 1},
	})
	if err != nil {
		return err
	}
	interceptor := l.Instances("interceptor")[0]
	say("   installed in %v; the interceptor's proxy is %s", time.Since(start).Round(time.Millisecond), interceptor.URL("http"))

	say("== deploying the sample app %s/%s at zero replicas, with an HTTPScaledObject for host %s", appNamespace, appName, appHost)
	if err := deployApp(ctx, c.Client); err != nil {
		return err
	}
	if err := poll.Until(ctx, 60*time.Second, "lobby and KEDA to take the app over", func() error {
		return ready(ctx, c.Client, l.Admin, interceptor.URL("admin"))
	}); err != nil {
		return err
	}

	say("== sending GET http://%s/ to the interceptor while nothing runs", appHost)
	tl := coldstart.NewTimeline()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	coldstart.Watch(watchCtx, c.Client, l.Admin, []string{interceptor.URL("admin")}, appNamespace, appName, tl)
	time.Sleep(200 * time.Millisecond) // the timeline's stream subscription connects
	tl.Begin("request sent")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, interceptor.URL("http")+"/", nil)
	if err != nil {
		return err
	}
	req.Host = appHost
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("send the request: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tl.Mark(fmt.Sprintf("response %s", resp.Status), time.Now())
	stopWatch()
	say("   the request was held, then answered %s after a cold start of %s:", resp.Status, resp.Header.Get("X-Lobby-Cold-Start"))
	say("%s", tl)
	say("   the app answered: %.200s", body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the request got %s, want 200 OK", resp.Status)
	}

	say("== waiting for KEDA to scale the idle app back to zero (scaledownPeriod %ds, plus KEDA's polling interval)", cooldown)
	idle := time.Now()
	if err := poll.Until(ctx, 3*time.Minute, "the app to scale back to zero", func() error {
		var dep appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: appName}, &dep); err != nil {
			return err
		}
		if n := ptr.Deref(dep.Spec.Replicas, 1); n != 0 {
			return fmt.Errorf("%d replicas", n)
		}
		return nil
	}); err != nil {
		return err
	}
	say("   back to zero replicas %v after the last request", time.Since(idle).Round(time.Second))
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return stayUp(ctx, out, interceptor.URL("http"), interceptor.URL("admin"))
}

// stayUp offers the interceptor's proxy and admin ports on the machine's loopback and waits for
// Ctrl-C, which ends ctx.
func stayUp(ctx context.Context, out io.Writer, proxyURL, adminURL string) error {
	addrs, err := netns.Expose(ctx,
		netns.Exposed{Addr: strings.TrimPrefix(proxyURL, "http://"), Port: appPort},
		netns.Exposed{Addr: strings.TrimPrefix(adminURL, "http://"), Port: statusPort})
	if err != nil {
		return fmt.Errorf("offer the demo's addresses on this machine: %w", err)
	}
	_, port, _ := net.SplitHostPort(addrs[0])
	fmt.Fprintf(out, `== the cluster stays up until you press Ctrl-C; from this machine (a browser too):
   the app through the interceptor (it wakes from zero again):
       http://%s:%s/
       curl -H 'Host: %s' http://%s/
   the interceptor's live status page:
       http://%s/status
`, browserHost, port, appHost, addrs[0], addrs[1])
	<-ctx.Done()
	fmt.Fprintln(out)
	return nil
}

// deployApp creates the sample app's namespace, Deployment (0 replicas), Service and
// HTTPScaledObject.
func deployApp(ctx context.Context, c client.Client) error {
	dep, svc := apps.Echo{
		Namespace: appNamespace, Name: appName, GracePeriodSeconds: 5,
		Env: map[string]string{"STARTUP_DELAY": "1s"},
	}.Objects()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNamespace}},
		dep,
		svc,
		&v1alpha1.HTTPScaledObject{
			ObjectMeta: metav1.ObjectMeta{Name: appName, Namespace: appNamespace},
			Spec: v1alpha1.HTTPScaledObjectSpec{
				Hosts:          []string{appHost, browserHost},
				ScaleTargetRef: v1alpha1.ScaleTargetRef{Name: appName, Kind: "Deployment", APIVersion: "apps/v1", Service: appName, Port: 80},
				Replicas:       &v1alpha1.ReplicaStruct{Min: ptr.To[int32](0), Max: ptr.To[int32](3)},
				CooldownPeriod: ptr.To[int32](cooldown),
			},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// ready reports nil once the interceptor routes the app and KEDA has created its HPA.
func ready(ctx context.Context, c client.Client, admin *framework.Admin, adminURL string) error {
	q, err := admin.Queue(ctx, adminURL)
	if err != nil {
		return err
	}
	if _, ok := q[appNamespace+"/"+appName]; !ok {
		return errors.New("the interceptor does not route the app yet")
	}
	var hso v1alpha1.HTTPScaledObject
	if err := c.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: appName}, &hso); err != nil {
		return err
	}
	for _, cond := range hso.Status.Conditions {
		if cond.Type == v1alpha1.ConditionReady && cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("HTTPScaledObject not ready: %s", cond.Message)
		}
	}
	var hpa = &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"}}
	return c.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: "keda-hpa-" + appName}, hpa)
}

// printer lets DumpLogs print to a writer.
type printer struct{ w io.Writer }

func (printer) Helper()                           {}
func (p printer) Logf(format string, args ...any) { fmt.Fprintf(p.w, format+"\n", args...) }

// sourceDir is the folder of this file, where the demo's chart values live.
func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}
