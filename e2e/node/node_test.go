//go:build e2e

package node_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/lobby-http/lobby/e2e/framework"
	"github.com/lobby-http/lobby/e2e/netns"
	"github.com/lobby-http/lobby/e2e/node"
)

// suite is the real node the package's tests share, or why there is none.
var suite struct {
	node *node.Node
	err  error
}

// TestMain builds the images (on the machine's own network: hack/images may download modules),
// then runs the tests in a local cluster with a real node beside the process kubelet.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || netns.Inside() || os.Getenv(node.ImagesEnv) != "" {
		os.Exit(framework.RunSuite(m, framework.Options{}, setup))
	}
	if err := node.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "skipping the real node's tests: %v\n", err)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "lobby-e2e-images-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	code := 1
	if err := node.BuildImages(context.Background(), dir); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
	} else {
		os.Setenv(node.ImagesEnv, dir)
		code = framework.RunSuite(m, framework.Options{}, setup)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// setup starts the real node with every image hack/images wrote. Where the node cannot run (a
// package or the kubelet binary missing) the tests skip, except under CI=true, as the cluster's
// own tests do.
func setup(ctx context.Context, c *framework.Cluster) error {
	tars, err := node.Tarballs()
	if err != nil {
		return err
	}
	n, err := node.Start(ctx, c, node.Options{Images: tars, SandboxImage: node.SandboxImage})
	if (errors.Is(err, node.ErrUnavailable) || errors.Is(err, framework.ErrNoBinaries)) && os.Getenv("CI") != "true" {
		suite.err = err
		return nil
	}
	suite.node = n
	return err
}

// suiteNode returns the real node, or skips t with the reason there is none.
func suiteNode(t *testing.T) *node.Node {
	t.Helper()
	framework.SuiteCluster(t)
	if suite.node == nil {
		if suite.err == nil {
			suite.err = errors.New("no real node")
		}
		t.Skip(suite.err)
	}
	return suite.node
}
