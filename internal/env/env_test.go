package env

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// lookup reads variables from vars, as os.LookupEnv reads the environment.
func lookup(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// checkErr fails t unless err is nil when want is empty, or else contains each of want.
func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want string
		ok   bool
	}{
		{name: "An unset variable gives the default.", vars: nil, want: "def"},
		{name: "An empty variable counts as unset.", vars: map[string]string{"X": ""}, want: "def"},
		{name: "A set variable gives its value as written.", vars: map[string]string{"X": " a b "}, want: " a b ", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(tt.vars))
			if got := l.String("X", "def"); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
			if _, ok := l.Get("X"); ok != tt.ok {
				t.Errorf("Get ok = %v, want %v", ok, tt.ok)
			}
			checkErr(t, l.Err(), nil)
		})
	}
}

func TestAddr(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    string
		wantErr []string
	}{
		{name: "An unset address gives the default.", want: ":8080"},
		{name: "A port alone listens on every interface.", value: ":9090", want: ":9090"},
		{name: "A host and a port are accepted.", value: "127.0.0.1:9090", want: "127.0.0.1:9090"},
		{name: "A missing port is rejected with the expected forms.", value: "localhost", want: "localhost",
			wantErr: []string{`A: parse address "localhost": want host:port or :port: `}},
		{name: "Port zero is rejected.", value: ":0", want: ":0",
			wantErr: []string{`A: parse address ":0": port must be a number from 1 to 65535`}},
		{name: "A port above 65535 is rejected.", value: ":65536", want: ":65536",
			wantErr: []string{`A: parse address ":65536": port must be a number from 1 to 65535`}},
		{name: "A named port is rejected.", value: ":http", want: ":http",
			wantErr: []string{`port must be a number from 1 to 65535`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"A": tt.value}))
			if got := l.Addr("A", ":8080"); got != tt.want {
				t.Errorf("Addr = %q, want %q", got, tt.want)
			}
			checkErr(t, l.Err(), tt.wantErr)
		})
	}
}

func TestNamespace(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    string
		wantErr []string
	}{
		{name: "An unset namespace means none.", want: ""},
		{name: "A DNS label is accepted.", value: "team-a", want: "team-a"},
		{name: "Capital letters are rejected.", value: "Team", want: "Team",
			wantErr: []string{`NS: invalid namespace "Team": a lowercase RFC 1123 label`}},
		{name: "A name longer than 63 characters is rejected.", value: strings.Repeat("a", 64), want: strings.Repeat("a", 64),
			wantErr: []string{"NS: invalid namespace", "63"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"NS": tt.value}))
			if got := l.Namespace("NS"); got != tt.want {
				t.Errorf("Namespace = %q, want %q", got, tt.want)
			}
			checkErr(t, l.Err(), tt.wantErr)

			// CheckNamespace applies the same rule to a value from elsewhere.
			l = NewLoader(lookup(nil))
			if tt.value != "" {
				l.CheckNamespace("NS", tt.value)
			}
			checkErr(t, l.Err(), tt.wantErr)
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		checks  []DurationCheck
		want    time.Duration
		wantErr []string
	}{
		{name: "An unset duration gives the default, checks or not.", checks: []DurationCheck{AtLeast(time.Hour)}, want: 5 * time.Second},
		{name: "A Go duration is parsed.", value: "1m30s", want: 90 * time.Second},
		{name: "A bare number is rejected and gives the default.", value: "30", want: 5 * time.Second,
			wantErr: []string{`D: parse duration "30": want a Go duration such as 30s or 1m30s`}},
		{name: "Positive rejects zero, naming the value as written.", value: "0s", checks: []DurationCheck{Positive}, want: 0,
			wantErr: []string{"D: must be positive, got 0s"}},
		{name: "Positive accepts a nanosecond.", value: "1ns", checks: []DurationCheck{Positive}, want: time.Nanosecond},
		{name: "NonNegative accepts zero.", value: "0", checks: []DurationCheck{NonNegative}, want: 0},
		{name: "NonNegative rejects a negative duration.", value: "-1s", checks: []DurationCheck{NonNegative}, want: -time.Second,
			wantErr: []string{"D: must not be negative, got -1s"}},
		{name: "AtLeast accepts its minimum.", value: "10ms", checks: []DurationCheck{AtLeast(10 * time.Millisecond)}, want: 10 * time.Millisecond},
		{name: "AtLeast rejects less than its minimum.", value: "1ms", checks: []DurationCheck{AtLeast(10 * time.Millisecond)}, want: time.Millisecond,
			wantErr: []string{"D: must be at least 10ms, got 1ms"}},
		{name: "Every failed check is reported.", value: "-1s", checks: []DurationCheck{Positive, NonNegative}, want: -time.Second,
			wantErr: []string{"must be positive, got -1s", "must not be negative, got -1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"D": tt.value}))
			if got := l.Duration("D", 5*time.Second, tt.checks...); got != tt.want {
				t.Errorf("Duration = %s, want %s", got, tt.want)
			}
			checkErr(t, l.Err(), tt.wantErr)
		})
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    int
		wantErr []string
	}{
		{name: "An unset integer gives the default.", want: 1000},
		{name: "The minimum is accepted.", value: "1", want: 1},
		{name: "Less than the minimum is rejected.", value: "0", want: 0,
			wantErr: []string{"N: must be at least 1, got 0"}},
		{name: "A non-number is rejected and gives the default.", value: "1k", want: 1000,
			wantErr: []string{`N: parse integer "1k"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"N": tt.value}))
			if got := l.Int("N", 1000, 1); got != tt.want {
				t.Errorf("Int = %d, want %d", got, tt.want)
			}
			checkErr(t, l.Err(), tt.wantErr)
		})
	}
}

func TestBool(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    bool
		wantErr []string
	}{
		{name: "An unset boolean gives the default.", want: true},
		{name: "False is read.", value: "false", want: false},
		{name: "Surrounding spaces are ignored.", value: " 0 ", want: false},
		{name: "A word other than true or false is rejected and gives the default.", value: "yes", want: true,
			wantErr: []string{`B: parse boolean "yes": want true or false`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"B": tt.value}))
			if got := l.Bool("B", true); got != tt.want {
				t.Errorf("Bool = %v, want %v", got, tt.want)
			}
			checkErr(t, l.Err(), tt.wantErr)
		})
	}
}

func TestParse(t *testing.T) {
	errOdd := errors.New("want an even number")
	even := func(v string) (int, error) {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n%2 != 0 {
			return 0, errOdd
		}
		return n, nil
	}
	tests := []struct {
		name    string
		value   string
		want    int
		wantErr []string
	}{
		{name: "An unset variable gives the default without calling the parser.", want: -2},
		{name: "The parser's value is returned.", value: "4", want: 4},
		{name: "The parser's error is named after the variable and gives the default.", value: "3", want: -2,
			wantErr: []string{"P: want an even number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(map[string]string{"P": tt.value}))
			if got := Parse(l, "P", -2, even); got != tt.want {
				t.Errorf("Parse = %d, want %d", got, tt.want)
			}
			err := l.Err()
			checkErr(t, err, tt.wantErr)
			if err != nil && !errors.Is(err, errOdd) {
				t.Errorf("error %q does not wrap the parser's error", err)
			}
		})
	}
}

func TestErr(t *testing.T) {
	errA, errB := errors.New("a is wrong"), errors.New("b is wrong")
	tests := []struct {
		name  string
		fails map[string]error
		order []string
		want  string
	}{
		{name: "No failures give no error.", want: ""},
		{name: "One failure is named and wrapped.", fails: map[string]error{"A": errA}, order: []string{"A"},
			want: "load configuration: A: a is wrong"},
		{name: "Every failure is reported, in the order recorded.", fails: map[string]error{"A": errA, "B": errB}, order: []string{"B", "A"},
			want: "load configuration: B: b is wrong\nA: a is wrong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLoader(lookup(nil))
			for _, name := range tt.order {
				l.Fail(name, tt.fails[name])
			}
			err := l.Err()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Err = %v, want %q", err, tt.want)
			}
			for _, name := range tt.order {
				if !errors.Is(err, tt.fails[name]) {
					t.Errorf("error does not wrap %q", tt.fails[name])
				}
			}
		})
	}
}
