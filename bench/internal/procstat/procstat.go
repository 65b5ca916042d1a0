// Package procstat reads a process's resident memory and CPU time from
// /proc, for the server-side figures of a load run.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it
// is 100 on every Linux architecture Go supports.
const clockTick = 100

// Sample is one reading of a process.
type Sample struct {
	Pid    int   `json:"pid"`
	RSSKiB int64 `json:"rss_kib"` // VmRSS
	CPUus  int64 `json:"cpu_us"`  // utime + stime, in microseconds (10 ms resolution)
}

// Read samples pid.
func Read(pid int) (Sample, error) {
	s := Sample{Pid: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("procstat: %w", err)
	}
	if s.RSSKiB, err = vmRSS(status); err != nil {
		return s, fmt.Errorf("procstat: pid %d: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("procstat: %w", err)
	}
	ticks, err := cpuTicks(stat)
	if err != nil {
		return s, fmt.Errorf("procstat: pid %d: %w", pid, err)
	}
	s.CPUus = ticks * (1e6 / clockTick)
	return s, nil
}

// vmRSS finds "VmRSS:   1234 kB" in a status file.
func vmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) < 1 {
				break
			}
			return strconv.ParseInt(string(f[0]), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// cpuTicks sums utime and stime (fields 14 and 15) of a stat line; the
// command name (field 2) may hold spaces, so fields are counted after its
// closing parenthesis.
func cpuTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14 → f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat")
	}
	u, err := strconv.ParseInt(string(f[11]), 10, 64)
	if err != nil {
		return 0, err
	}
	s, err := strconv.ParseInt(string(f[12]), 10, 64)
	if err != nil {
		return 0, err
	}
	return u + s, nil
}

// Sum adds up samples of several processes (edge + NATS, say).
func Sum(samples []Sample) Sample {
	var t Sample
	for _, s := range samples {
		t.RSSKiB += s.RSSKiB
		t.CPUus += s.CPUus
	}
	return t
}
