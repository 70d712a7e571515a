// Package memlimit sets the Go runtime's soft memory limit from the container's memory limit, so
// that the garbage collector works harder as a binary nears the limit instead of letting the heap
// grow until the kernel kills the container.
//
// Without a soft limit the collector lets the heap grow to twice what is live (GOGC=100) before it
// collects. A process whose live heap is a little over half its container's limit is then killed
// for memory it would have freed at the next collection. With the soft limit set, the collector
// runs as often as it must to stay under it, and the process is killed only when what is live
// truly does not fit.
package memlimit

import (
	"fmt"
	"runtime/debug"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
)

const (
	// Variable is the environment variable the chart fills with the container's memory limit, in
	// bytes, through the downward API (resourceFieldRef limits.memory).
	Variable = "LOBBY_MEMORY_LIMIT"
	// GoVariable is the Go runtime's own soft limit variable. When it is set, the runtime has
	// applied it already, and it wins.
	GoVariable = "GOMEMLIMIT"
)

// Percent is the share of the container's memory limit given to the Go runtime as its soft limit.
// The soft limit covers only the memory the runtime manages (heap, goroutine stacks, its own
// metadata); the kernel counts the whole resident set, which also holds the binary's text and
// memory the runtime has freed but not yet returned. The collector also finishes a cycle a little
// after the heap crosses the limit. The remaining tenth of the limit absorbs both, so the kernel's
// hard limit is not reached before the collector has reacted.
const Percent = 90

// Source says where the soft limit in effect came from.
type Source string

const (
	// SourceNone means no limit is known: the runtime runs with its defaults, as without this
	// package.
	SourceNone Source = "none"
	// SourceContainer means the soft limit is Percent of the container's memory limit.
	SourceContainer Source = "container"
	// SourceGOMEMLIMIT means the GOMEMLIMIT environment variable set it, and it was left alone.
	SourceGOMEMLIMIT Source = "GOMEMLIMIT"
)

// Setting is the soft memory limit a binary runs with, and why.
type Setting struct {
	// Source is where the limit came from.
	Source Source
	// Container is the container's memory limit in bytes; 0 when unknown.
	Container int64
	// Soft is the soft limit in bytes that Decide chose for SourceContainer. For the other
	// sources Decide leaves it 0 and Configure reports the runtime's value (math.MaxInt64 when
	// there is none).
	Soft int64
}

// Parse reads a memory limit as the downward API writes it (a whole number of bytes, such as
// 536870912) or as a person writes a Kubernetes quantity (512Mi). Zero means no limit.
func Parse(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("parse memory limit %q: want bytes or a Kubernetes quantity such as 512Mi", s)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("parse memory limit %q: must not be negative", s)
	}
	return q.Value(), nil
}

// Decide chooses the soft limit for a container limit of container bytes (0 when unknown), given
// whether GOMEMLIMIT is set. It has no side effects.
func Decide(container int64, goMemLimitSet bool) Setting {
	switch {
	case goMemLimitSet:
		return Setting{Source: SourceGOMEMLIMIT, Container: container}
	case container <= 0:
		return Setting{Source: SourceNone}
	default:
		// Divided first: a limit near math.MaxInt64 must not overflow.
		return Setting{Source: SourceContainer, Container: container, Soft: container / 100 * Percent}
	}
}

// Configure sets the runtime's soft limit for a container limit of container bytes (0 when
// unknown; each binary's configuration reads it from Variable with Parse) unless goMemLimitSet
// says GOMEMLIMIT decided it already, and logs the limit in effect.
func Configure(container int64, goMemLimitSet bool, log logr.Logger) Setting {
	s := Decide(container, goMemLimitSet)
	if s.Source == SourceContainer {
		debug.SetMemoryLimit(s.Soft)
	} else {
		// A negative input reads the limit without changing it.
		s.Soft = debug.SetMemoryLimit(-1)
	}
	log.Info("memory limit", "source", string(s.Source), "softLimitBytes", s.Soft, "containerLimitBytes", s.Container)
	return s
}
