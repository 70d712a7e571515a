// Package stream is the wire format of the push stream that every interceptor serves on its admin
// port and every scaler subscribes to. It is lobby's own protocol, documented in docs/stream.md:
// newline-delimited JSON frames over a long-lived HTTP response, each frame carrying a version.
package stream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Version is the version of the frame format this package writes and reads. A reader rejects
// frames of any other version with ErrVersion, so a mixed fleet fails loudly rather than silently
// misreading counts.
const Version = 1

// Path is the admin-server path of the stream.
const Path = "/stream"

// ContentType is the media type of the stream's response body.
const ContentType = "application/x-ndjson"

// DefaultMaxFrameBytes bounds one frame; a frame for 10,000 routes fits well within it.
const DefaultMaxFrameBytes = 16 << 20

// Kind tells what a frame means for the reader's view of an interceptor.
type Kind string

const (
	// KindSnapshot is the first frame of every stream: the counts of every route the interceptor
	// knows. It replaces everything the reader held for that interceptor.
	KindSnapshot Kind = "snapshot"
	// KindCounts is a periodic frame with the counts of every route, with the same meaning as a
	// snapshot. It also serves as the stream's heartbeat.
	KindCounts Kind = "counts"
	// KindActivate is sent as soon as routes go from idle to busy. It carries only those routes,
	// and updates them without touching the others.
	KindActivate Kind = "activate"
)

// Sentinel errors returned by Decoder.Decode.
var (
	// ErrVersion means the frame was written by an incompatible version of the protocol.
	ErrVersion = errors.New("unsupported stream version")
	// ErrFrameTooLarge means a frame exceeded the decoder's size bound.
	ErrFrameTooLarge = errors.New("stream frame too large")
	// ErrInvalidFrame means the frame was well-formed JSON with meaningless content.
	ErrInvalidFrame = errors.New("invalid stream frame")
)

// Frame is one message of the stream.
type Frame struct {
	// Version is the protocol version; always Version when written by this package.
	Version int `json:"v"`
	// Kind says how the reader applies Routes.
	Kind Kind `json:"kind"`
	// Seq numbers the frames of one stream from 1; a reader can detect gaps and restarts.
	Seq uint64 `json:"seq"`
	// Interceptor identifies the writer (its pod name), for logs and metrics.
	Interceptor string `json:"interceptor"`
	// UnixMilli is when the frame was written, by the interceptor's clock.
	UnixMilli int64 `json:"unixMilli"`
	// Routes are the counts, one entry per route.
	Routes []RouteCounts `json:"routes"`
}

// RouteCounts is one interceptor's view of one route.
type RouteCounts struct {
	// Key is the HTTPScaledObject's "namespace/name".
	Key string `json:"key"`
	// InFlight is the number of requests forwarded and not yet answered.
	InFlight int64 `json:"inFlight"`
	// Held is the number of requests waiting for the target to have a ready endpoint.
	Held int64 `json:"held"`
	// Open is the number of upgraded connections (WebSockets) currently open. They keep the route
	// active but are not in-flight requests.
	Open int64 `json:"open"`
	// Requests is the number of requests received since the interceptor started.
	Requests uint64 `json:"requests"`
	// Rate is requests per second averaged over the route's window, so that the rates of several
	// interceptors add up.
	Rate float64 `json:"rate"`
}

// Active reports whether the counts show any work: something held, in flight or open, or a
// non-zero rate.
func (c RouteCounts) Active() bool {
	return c.InFlight > 0 || c.Held > 0 || c.Open > 0 || c.Rate > 0
}

// Encoder writes frames to a stream.
type Encoder struct {
	w   io.Writer
	buf bytes.Buffer
}

// NewEncoder returns an Encoder writing to w. The caller flushes w after each frame when w
// buffers (an http.ResponseWriter does).
func NewEncoder(w io.Writer) *Encoder {
	return &Encoder{w: w}
}

// Encode writes f as one line. It sets f.Version.
func (e *Encoder) Encode(f *Frame) error {
	f.Version = Version
	e.buf.Reset()
	enc := json.NewEncoder(&e.buf) // Encode appends the newline that ends the frame.
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("encode stream frame: %w", err)
	}
	if _, err := e.w.Write(e.buf.Bytes()); err != nil {
		return fmt.Errorf("write stream frame: %w", err)
	}
	return nil
}

// Decoder reads frames from a stream.
type Decoder struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewDecoder returns a Decoder reading from r that rejects frames longer than maxFrameBytes
// (DefaultMaxFrameBytes when not positive).
func NewDecoder(r io.Reader, maxFrameBytes int) *Decoder {
	if maxFrameBytes <= 0 {
		maxFrameBytes = DefaultMaxFrameBytes
	}
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10), max: maxFrameBytes}
}

// Decode reads the next frame into f. It returns io.EOF at a clean end of stream,
// io.ErrUnexpectedEOF for a truncated frame, ErrFrameTooLarge, ErrVersion, or ErrInvalidFrame.
func (d *Decoder) Decode(f *Frame) error {
	for {
		line, err := d.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			continue // Blank lines are allowed as keep-alives.
		}
		*f = Frame{}
		if err := json.Unmarshal(line, f); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidFrame, err)
		}
		return f.validate()
	}
}

// readLine returns the next line without surrounding white space.
func (d *Decoder) readLine() ([]byte, error) {
	d.buf = d.buf[:0]
	for {
		chunk, err := d.r.ReadSlice('\n')
		if len(d.buf)+len(chunk) > d.max {
			return nil, ErrFrameTooLarge
		}
		d.buf = append(d.buf, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(d.buf)) == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read stream frame: %w", err)
	}
	return bytes.TrimSpace(d.buf), nil
}

func (f *Frame) validate() error {
	if f.Version != Version {
		return fmt.Errorf("%w: got %d, want %d", ErrVersion, f.Version, Version)
	}
	switch f.Kind {
	case KindSnapshot, KindCounts, KindActivate:
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidFrame, f.Kind)
	}
	for i := range f.Routes {
		c := &f.Routes[i]
		switch {
		case c.Key == "":
			return fmt.Errorf("%w: route %d has no key", ErrInvalidFrame, i)
		case c.InFlight < 0 || c.Held < 0 || c.Open < 0:
			return fmt.Errorf("%w: route %q has a negative count", ErrInvalidFrame, c.Key)
		case math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0:
			return fmt.Errorf("%w: route %q has an invalid rate", ErrInvalidFrame, c.Key)
		}
	}
	return nil
}
