package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The relay lets a program that RunInside runs in a namespace offer some of its addresses on the
// machine's own loopback device, for a person to curl or open in a browser:
//
//   - Before it starts the program, the process outside (the parent) creates a pair of connected
//     Unix sockets (SOCK_SEQPACKET: each message arrives whole) and hands one end to the program
//     as file descriptor 3, named by relayFDEnv.
//   - Inside, Expose sends the addresses to relay, each with the port the program would like on
//     the machine. The parent listens on 127.0.0.1 (that port, or any if it is taken) for each,
//     and answers with the addresses it listens on.
//   - For every connection it accepts, the parent asks the program for a connection to the
//     target, one message naming the target's index. The program dials the target inside the
//     namespace and hands the connected socket back as the message's file descriptor (or an
//     error text), and the parent copies bytes both ways between the two.
//
// Nothing listens on the machine until the program asks for it, the listeners accept only on
// loopback, and everything closes when the program exits (its end of the socket pair closes).

// relayFDEnv names the environment variable that carries the relay socket's descriptor number.
const relayFDEnv = "LOBBY_NETNS_RELAY_FD"

// relayDialTimeout bounds the program's dial of a target.
const relayDialTimeout = 5 * time.Second

// Exposed is a target of Expose: an address inside the namespace and the port it would like on
// the machine's loopback (0: any).
type Exposed struct {
	// Addr is host:port inside the namespace.
	Addr string `json:"addr"`
	// Port is the port wanted on 127.0.0.1; when it is taken, another is used.
	Port int `json:"port"`
}

// exposeRequest is the program's first message; exposeReply the parent's answer.
type exposeRequest struct {
	Expose []Exposed `json:"expose"`
}

type exposeReply struct {
	Listen []string `json:"listen,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// exposed is set by the first Expose.
var exposed atomic.Bool

// Expose asks the process outside the namespace to listen on the machine's loopback for each
// target and relay the connections it accepts to the target, inside the namespace, until ctx ends
// or the program exits. It returns the addresses listened on, in the targets' order. It fails
// when the program does not run under RunInside, which hands it the relay socket; it may be called
// once.
func Expose(ctx context.Context, targets ...Exposed) ([]string, error) {
	if exposed.Swap(true) {
		return nil, errors.New("expose: called twice; the relay serves the first call only")
	}
	conn, err := relayConn()
	if err != nil {
		return nil, err
	}
	req, err := json.Marshal(exposeRequest{Expose: targets})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("expose: ask the relay: %w", err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("expose: read the relay's answer: %w", err)
	}
	var reply exposeReply
	if err := json.Unmarshal(buf[:n], &reply); err != nil {
		return nil, fmt.Errorf("expose: decode the relay's answer: %w", err)
	}
	if reply.Error != "" {
		return nil, fmt.Errorf("expose: %s", reply.Error)
	}
	if len(reply.Listen) != len(targets) {
		return nil, fmt.Errorf("expose: the relay listens on %d addresses for %d targets", len(reply.Listen), len(targets))
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	go serveDials(conn, targets)
	return reply.Listen, nil
}

// keepRelayFromChildren marks the relay socket close-on-exec, so the processes the program starts
// do not hold it open after the program exits.
func keepRelayFromChildren() {
	if fd, err := strconv.Atoi(os.Getenv(relayFDEnv)); err == nil && fd >= 3 {
		syscall.CloseOnExec(fd)
	}
}

// relayConn opens the relay socket the parent handed over, once.
var relayConn = sync.OnceValues(func() (*net.UnixConn, error) { return exposeConn(os.Getenv(relayFDEnv)) })

// exposeConn opens the relay socket whose descriptor number is v.
func exposeConn(v string) (*net.UnixConn, error) {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, errors.New("expose: no relay socket; the program must run under netns.RunInside")
	}
	f := os.NewFile(uintptr(fd), "relay")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("expose: open the relay socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("expose: descriptor %d is not a Unix socket", fd)
	}
	return uc, nil
}

// serveDials answers the parent's dial requests until the socket closes: each names a target by
// its index; the answer carries the connected socket, or an error text without one.
func serveDials(conn *net.UnixConn, targets []Exposed) {
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		i, err := strconv.Atoi(string(buf[:n]))
		if err != nil || i < 0 || i >= len(targets) {
			_, _ = conn.Write([]byte("bad dial request " + strconv.Quote(string(buf[:n]))))
			continue
		}
		if err := handOver(conn, targets[i].Addr); err != nil {
			if _, werr := conn.Write([]byte(err.Error())); werr != nil {
				return
			}
		}
	}
}

// handOver dials addr and sends the connected socket over conn.
func handOver(conn *net.UnixConn, addr string) error {
	c, err := net.DialTimeout("tcp", addr, relayDialTimeout)
	if err != nil {
		return err
	}
	defer c.Close() // the parent holds its own copy of the descriptor once sent
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, err := conn.WriteMsgUnix([]byte{0}, syscall.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("hand the connection over: %w", err)
	}
	return nil
}

// newRelayPair returns the two ends of a relay socket: the parent's, and the file to hand to the
// program.
func newRelayPair() (*net.UnixConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create the relay socket pair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "relay")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("open the relay socket: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "relay"), nil
}

// relay is the parent's side: it serves one program's Expose and the connections it brings, until
// the program's end of the socket closes.
type relay struct {
	conn *net.UnixConn
	host string // the address listeners bind, 127.0.0.1 outside tests

	mu sync.Mutex // one dial request at a time on conn
}

// serve runs the relay until stop is closed (the program has exited); then every listener and
// relayed connection closes.
func (r *relay) serve(stop <-chan struct{}) {
	// Closing the socket ends a read that waits for a program whose end some leftover process
	// still holds.
	closed := make(chan struct{})
	defer close(closed)
	go func() {
		select {
		case <-stop:
		case <-closed:
		}
		r.conn.Close()
	}()
	buf := make([]byte, 64<<10)
	n, err := r.conn.Read(buf)
	if err != nil {
		return // the program exited without asking
	}
	var req exposeRequest
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		r.answer(exposeReply{Error: "decode the request: " + err.Error()})
		return
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	var reply exposeReply
	for _, t := range req.Expose {
		l, err := net.Listen("tcp", net.JoinHostPort(r.host, strconv.Itoa(t.Port)))
		if err != nil && t.Port != 0 {
			l, err = net.Listen("tcp", net.JoinHostPort(r.host, "0"))
		}
		if err != nil {
			r.answer(exposeReply{Error: fmt.Sprintf("listen for %s: %v", t.Addr, err)})
			return
		}
		listeners = append(listeners, l)
		reply.Listen = append(reply.Listen, l.Addr().String())
	}
	if !r.answer(reply) {
		return
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	for i, l := range listeners {
		go r.accept(l, i, done, &conns)
	}
	<-stop
	close(done)
	for _, l := range listeners {
		l.Close()
	}
	conns.Wait()
}

// answer sends the reply to Expose and reports whether it was sent.
func (r *relay) answer(reply exposeReply) bool {
	b, _ := json.Marshal(reply)
	_, err := r.conn.Write(b)
	return err == nil
}

// accept relays the connections l accepts to target i until l closes.
func (r *relay) accept(l net.Listener, i int, done <-chan struct{}, conns *sync.WaitGroup) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			in, err := r.dial(i)
			if err != nil {
				return
			}
			defer in.Close()
			stop := make(chan struct{})
			go func() {
				select {
				case <-done:
				case <-stop:
				}
				c.Close()
				in.Close()
			}()
			defer close(stop)
			pipe(c, in)
		}()
	}
}

// dial asks the program for a connection to target i inside the namespace.
func (r *relay) dial(i int) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.conn.Write([]byte(strconv.Itoa(i))); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := r.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	if oobn == 0 {
		return nil, fmt.Errorf("dial inside the namespace: %s", buf[:n])
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("read the handed-over connection: %v", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("read the handed-over connection: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "relayed")
	defer f.Close()
	return net.FileConn(f)
}

// pipe copies both ways between a and b until both directions end, passing half-closes on.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
}
