package netns

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lobby-http/lobby/e2e/framework/poll"
)

// helperEnv makes the re-executed test binary run the helper tests below instead of skipping
// them; its value is a file the helper writes the namespace's name into.
const helperEnv = "LOBBY_NETNS_TEST_HELPER"

func requireNamespaces(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping network namespace tests in short mode")
	}
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("network namespace tests cannot run under CI: %v", err)
		}
		t.Skipf("skipping network namespace tests: %v", err)
	}
}

func TestCreateAndDelete(t *testing.T) {
	requireNamespaces(t)
	if Inside() {
		t.Skip("this test creates namespaces from the machine's own network")
	}

	t.Run("a new namespace has an up loopback device with the control-plane address, and Delete removes it", func(t *testing.T) {
		ns, err := Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ns.Name, namePrefix) {
			t.Errorf("name %q lacks the prefix %q", ns.Name, namePrefix)
		}
		out, err := ns.Command(t.Context(), "ip", "addr", "show", "dev", "lo").CombinedOutput()
		if err != nil {
			_ = ns.Delete()
			t.Fatalf("ip addr show inside: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "inet "+ControlPlaneAddr.String()+"/32") || !strings.Contains(string(out), ",UP") {
			t.Errorf("loopback device inside is not up with %s/32:\n%s", ControlPlaneAddr, out)
		}
		if err := ns.Delete(); err != nil {
			t.Fatal(err)
		}
		names, err := List()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(names, ns.Name) {
			t.Errorf("namespace %s is still listed: %v", ns.Name, names)
		}
	})

	t.Run("Delete kills a process left running in the namespace", func(t *testing.T) {
		ns, err := Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		cmd := ns.Command(t.Context(), "sleep", "300")
		if err := cmd.Start(); err != nil {
			_ = ns.Delete()
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(waited) }()
		pid := cmd.Process.Pid
		// `ip netns exec` switches namespace and then execs sleep in the same process.
		err = poll.Until(t.Context(), 5*time.Second, "the process to show up in the namespace", func() error {
			pids, err := ns.PIDs()
			if err == nil && !slices.Contains(pids, pid) {
				err = fmt.Errorf("process %d is not among the namespace's %v", pid, pids)
			}
			return err
		})
		if err != nil {
			_ = ns.Delete()
			t.Fatal(err)
		}
		if err := ns.Delete(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			t.Fatalf("process %d still running after Delete", pid)
		}
	})
}

func TestAddrOutsideNamespace(t *testing.T) {
	if Inside() {
		t.Skip("this test checks the refusal outside a namespace")
	}
	ip := netip.MustParseAddr("10.244.9.9")
	if err := AddAddr(ip); err == nil {
		_ = DelAddr(ip)
		t.Fatal("AddAddr outside a namespace succeeded; it must refuse to change the machine's network")
	}
	if err := DelAddr(ip); err == nil {
		t.Fatal("DelAddr outside a namespace succeeded; it must refuse to change the machine's network")
	}
}

func TestRunInside(t *testing.T) {
	requireNamespaces(t)
	if Inside() {
		t.Skip("this test re-executes the binary from the machine's own network")
	}
	cases := []struct {
		name     string
		run      string
		wantCode int
	}{
		{"tests that pass inside give exit code 0", "^TestHelperInside$", 0},
		{"tests that fail inside give their non-zero exit code", "^TestHelperFails$", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nameFile := filepath.Join(t.TempDir(), "name")
			t.Setenv(helperEnv, nameFile)
			// The child's output is kept out of this test's own output: a child's
			// deliberate "--- FAIL" line would otherwise read as this run failing.
			var out bytes.Buffer
			code, err := runInside([]string{"-test.run=" + tc.run, "-test.count=1", "-test.v"}, &out, &out)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tc.wantCode, out.String())
			}
			name, err := os.ReadFile(nameFile)
			if err != nil {
				t.Fatalf("the helper did not record its namespace: %v", err)
			}
			if !strings.HasPrefix(string(name), namePrefix) {
				t.Fatalf("the helper ran in namespace %q, not one created here", name)
			}
			names, err := List()
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(names, string(name)) {
				t.Errorf("namespace %s is still listed after the run: %v", name, names)
			}
		})
	}
}

// helperInside returns the file to record the namespace name in, skipping the test unless it
// runs as TestRunInside's child.
func helperInside(t *testing.T) string {
	t.Helper()
	file := os.Getenv(helperEnv)
	if file == "" {
		t.Skip("helper for TestRunInside")
	}
	if !Inside() {
		t.Fatal("Inside is false in the re-executed binary")
	}
	if err := os.WriteFile(file, []byte(Name()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestHelperInside(t *testing.T) {
	helperInside(t)
	ip := netip.MustParseAddr("10.244.7.7")
	if err := AddAddr(ip); err != nil {
		t.Fatal(err)
	}
	if err := AddAddr(ip); err != nil {
		t.Fatalf("adding the same address twice: %v", err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatalf("listen on an added address: %v", err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hi"))
			_ = c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial an added address: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v; want \"hi\"", buf, err)
	}
	_ = c.Close()
	_ = ln.Close()
	if err := DelAddr(ip); err != nil {
		t.Fatal(err)
	}
	if err := DelAddr(ip); err != nil {
		t.Fatalf("deleting a missing address: %v", err)
	}
	if ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String()); err == nil {
		_ = ln.Close()
		t.Fatal("listening on a deleted address succeeded")
	} else if !strings.Contains(err.Error(), syscall.EADDRNOTAVAIL.Error()) {
		t.Fatalf("listen on a deleted address: %v, want %v", err, syscall.EADDRNOTAVAIL)
	}
	if ln, err := net.Listen("tcp", netip.AddrPortFrom(ControlPlaneAddr, 0).String()); err != nil {
		t.Fatalf("listen on the control-plane address: %v", err)
	} else {
		_ = ln.Close()
	}
	if err := AddAddr(netip.MustParseAddr("127.0.0.5")); err == nil {
		t.Fatal("AddAddr accepted a loopback address")
	}
}

func TestHelperFails(t *testing.T) {
	helperInside(t)
	t.Error("failing on purpose: the parent checks that the exit code comes through")
}
