// Package sysmonpace keeps the Go runtime's monitor thread (sysmon) at its
// slow pace in the services' processes, whatever their deployment sets.
//
// A process that goes idle between bursts of work (an edge between
// broadcasts, at thousands of messages a second) otherwise has sysmon sleep
// until the next system call and then poll every 20 µs again; on a 2-core
// VM that took 10–20 % of each process's CPU and lengthened the tail of a
// broadcast (docs/PERFORMANCE.md). With GODEBUG=schedtrace set, sysmon never
// sleeps that deeply and backs off to one check per 10 ms; a trace period
// of 24.8 days prints nothing.
//
// The runtime reads schedtrace only from GODEBUG at start: a //go:debug
// directive refuses it (the toolchain accepts only the settings of its
// compatibility table, internal/godebugs), and changing GODEBUG later
// updates only the runtime's atomic settings. So Apply re-executes the
// program once, at the top of main, with the setting added.
package sysmonpace

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// Setting is the GODEBUG setting Apply adds.
const Setting = "schedtrace=2147483647"

// Apply re-executes the running program (same process, arguments and
// environment) with Setting added to GODEBUG, unless GODEBUG already sets
// schedtrace: any value is kept, so GODEBUG=schedtrace=0 runs with the
// runtime's default. It returns only when it did not re-execute: nil when
// there was nothing to do, an error when the exec failed (the program then
// goes on as it is). Call it first in main, before any goroutine or file
// matters: the new image starts from scratch.
func Apply() error { return apply(Setting) }

func apply(setting string) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	key, _, _ := strings.Cut(setting, "=")
	list, _ := os.LookupEnv("GODEBUG")
	for s := range strings.SplitSeq(list, ",") {
		if k, _, _ := strings.Cut(strings.TrimSpace(s), "="); k == key {
			return nil
		}
	}
	if list != "" {
		setting = list + "," + setting
	}
	env := []string{"GODEBUG=" + setting}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	// /proc/self/exe is this very image, even when its file was replaced
	// or removed since it started (an upgrade in place).
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	return errors.Join(errors.New("sysmonpace: re-executing with GODEBUG="+setting), err)
}
