// Package logging builds the logr.Logger every lobby binary logs through, backed by zap. It knows
// two verbosities, as the project's logging rules do: V(0) for what an operator wants to see, and
// V(1) for what a developer debugging a problem wants to see.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Level is how much a logger writes.
type Level string

const (
	// LevelError writes errors only.
	LevelError Level = "error"
	// LevelInfo writes errors and V(0) messages. It is the default.
	LevelInfo Level = "info"
	// LevelDebug writes everything, V(1) messages included.
	LevelDebug Level = "debug"
)

// ParseLevel returns the Level named by s, ignoring case.
func ParseLevel(s string) (Level, error) {
	switch l := Level(strings.ToLower(strings.TrimSpace(s))); l {
	case LevelError, LevelInfo, LevelDebug:
		return l, nil
	default:
		return "", fmt.Errorf("parse log level %q: want one of error, info, debug", s)
	}
}

// zapLevel maps a Level to zap's; logr's V(n) is zap's level -n.
func (l Level) zapLevel() zapcore.Level {
	switch l {
	case LevelError:
		return zapcore.ErrorLevel
	case LevelDebug:
		return zapcore.DebugLevel
	default:
		return zapcore.InfoLevel
	}
}

// Format is how log lines are written.
type Format string

const (
	// FormatJSON writes one JSON object per line, for log collectors. It is the default.
	FormatJSON Format = "json"
	// FormatConsole writes human-readable lines, for a terminal.
	FormatConsole Format = "console"
)

// ParseFormat returns the Format named by s, ignoring case.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case FormatJSON, FormatConsole:
		return f, nil
	default:
		return "", fmt.Errorf("parse log format %q: want one of json, console", s)
	}
}

// Options configure New.
type Options struct {
	// Level is how much to write; empty means LevelInfo.
	Level Level
	// Format is how to write it; empty means FormatJSON.
	Format Format
	// Output receives the log lines; nil means standard error.
	Output io.Writer
}

// New returns a logger configured by o.
func New(o Options) logr.Logger {
	out := o.Output
	if out == nil {
		out = os.Stderr
	}
	enc := zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      "caller",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	}
	var encoder zapcore.Encoder
	if o.Format == FormatConsole {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.AddSync(out), o.Level.zapLevel())
	// No zap.AddStacktrace: stack traces are noise for the expected errors of a network service,
	// whose wrapped messages carry their context instead.
	z := zap.New(core, zap.AddCaller(), zap.ErrorOutput(zapcore.AddSync(out)))
	return zapr.NewLoggerWithOptions(z, zapr.LogInfoLevel("v"))
}
