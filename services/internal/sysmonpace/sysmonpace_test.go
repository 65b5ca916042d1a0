package sysmonpace

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary a helper process: it applies the
// setting named by the variable, prints its pid and GODEBUG, and runs a
// moment so that a schedtrace period of 1 ms prints a trace line.
const helperEnv = "SYSMONPACE_HELPER_SETTING"

func TestMain(m *testing.M) {
	if setting := os.Getenv(helperEnv); setting != "" {
		if err := apply(setting); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("pid=%d GODEBUG=%s\n", os.Getpid(), os.Getenv("GODEBUG"))
		for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
			runtime.Gosched()
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs the test binary as a helper with GODEBUG set to godebug (unset
// when nil) and returns its stdout, its stderr and its pid.
func helper(t *testing.T, setting string, godebug *string) (stdout, stderr string, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+setting)
	if godebug != nil {
		cmd.Env = append(cmd.Env, "GODEBUG="+*godebug)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\n%s%s", err, out.String(), errb.String())
	}
	return out.String(), errb.String(), cmd.Process.Pid
}

func ptr(s string) *string { return &s }

// TestApply_ReExecutesWithTheSettingAdded: without schedtrace in GODEBUG the
// program runs again, in the same process, with the setting added to what
// GODEBUG had; with schedtrace already set (any value) it is left alone.
func TestApply_ReExecutesWithTheSettingAdded(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Apply re-executes through /proc/self/exe, on Linux only")
	}
	for _, tc := range []struct {
		name    string
		godebug *string
		want    string
	}{
		{"unset", nil, Setting},
		{"empty", ptr(""), Setting},
		{"other settings kept", ptr("http2client=0"), "http2client=0," + Setting},
		{"schedtrace=0 kept", ptr("schedtrace=0"), "schedtrace=0"},
		{"another period kept", ptr("madvdontneed=1,schedtrace=1000"), "madvdontneed=1,schedtrace=1000"},
	} {
		out, _, pid := helper(t, Setting, tc.godebug)
		want := "pid=" + strconv.Itoa(pid) + " GODEBUG=" + tc.want + "\n"
		if out != want {
			t.Errorf("%s: helper printed %q, want %q (the same pid: an exec, not a child)", tc.name, out, want)
		}
	}
}

// TestApply_TheRuntimeTakesTheSetting: the runtime of the re-executed image
// reads the setting at start. A schedtrace period of 1 ms makes it print
// scheduler trace lines, which it does only if the setting was in GODEBUG
// when the process started.
func TestApply_TheRuntimeTakesTheSetting(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Apply re-executes through /proc/self/exe, on Linux only")
	}
	_, stderr, _ := helper(t, "schedtrace=1", nil)
	if !strings.Contains(stderr, "SCHED ") {
		t.Fatalf("no scheduler trace after applying schedtrace=1; stderr:\n%s", stderr)
	}
}
