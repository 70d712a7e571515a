package framework

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/lobby-http/lobby/e2e/netns"
)

// suite is the cluster RunSuite started for the test binary, or why there is none.
var suite struct {
	cluster *Cluster
	err     error
}

// RunSuite is the TestMain of a package whose tests share one cluster. Under -short it runs
// the tests with no cluster (SuiteCluster skips them). Otherwise it re-executes the test binary
// inside a fresh network namespace (netns.RunTestsInside), and there starts the cluster with
// opts, calls setup (which may be nil) with it, runs the tests, and stops the cluster. When the
// control-plane binaries are missing the tests are skipped, except under CI=true, where it
// fails; a failed start or setup prints the components' logs and fails. A slow stop is only
// reported. It returns the exit code for os.Exit.
func RunSuite(m *testing.M, opts Options, setup func(context.Context, *Cluster) error) int {
	flag.Parse()
	if testing.Short() {
		suite.err = errors.New("skipping: short mode, and these tests start a local cluster")
		return m.Run()
	}
	if !netns.Inside() {
		return netns.RunTestsInside(m)
	}
	if os.Getenv("LOBBY_E2E_KEEP") != "" {
		opts.KeepDir = true
	}
	ctx := context.Background()
	c, err := Start(ctx, opts)
	if err != nil {
		if errors.Is(err, ErrNoBinaries) && os.Getenv("CI") != "true" {
			suite.err = err
			return m.Run()
		}
		fmt.Fprintf(os.Stderr, "FAIL: start the local cluster: %v\n", err)
		return 1
	}
	code := 0
	if setup != nil {
		if err := setup(ctx, c); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: set up the tests: %v\n", err)
			c.DumpLogs(Stderr)
			code = 1
		}
	}
	if code == 0 {
		suite.cluster = c
		code = m.Run()
	}
	// Stop kills what does not exit within its bound (kube-apiserver under load can take longer
	// than that), so nothing is left either way; whether Stop leaves nothing behind is the
	// framework's own test, not the verdict on these tests.
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "warning: stop the local cluster: %v\n", err)
	}
	return code
}

// SuiteCluster returns the cluster RunSuite started, or skips tb with the reason there is none.
func SuiteCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if suite.cluster == nil {
		if suite.err == nil {
			suite.err = errors.New("no local cluster: the package's TestMain must call framework.RunSuite")
		}
		tb.Skip(suite.err)
	}
	return suite.cluster
}

// OnStop registers f to run when the cluster stops, before its processes are stopped, newest
// first: for what a test package opened against the cluster, such as client connections.
func (c *Cluster) OnStop(f func() error) { c.onStop(f) }

// Stderr is a TB that prints to standard error, for DumpLogs outside a test.
var Stderr TB = stderr{}

type stderr struct{}

func (stderr) Helper()                         {}
func (stderr) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
