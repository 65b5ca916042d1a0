// Package memlimit makes a service's Go heap respect its container's memory
// limit: it sets the runtime's soft memory limit (GOMEMLIMIT) to a share of
// the cgroup limit, so that the collector works harder before the kernel's
// OOM killer would step in. (GOMAXPROCS already follows the cgroup CPU
// limit: the Go runtime does that itself since Go 1.25.)
package memlimit

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's limit given to the Go heap; the rest
// is for stacks outside the heap's accounting, the kernel's socket buffers
// charged to the container, and headroom.
const Share = 0.9

// unlimited: cgroup v1 reports "no limit" as a huge page-aligned number.
const unlimited = 1 << 62

// Apply sets the soft memory limit from the cgroup of this process, unless
// GOMEMLIMIT is set (the runtime applied it already) or there is no limit.
// It logs what it did.
func Apply(log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "gomemlimit", v, "gomaxprocs", runtime.GOMAXPROCS(0))
		return
	}
	limit, path := FromCgroup("/")
	if limit <= 0 {
		log.Info("no container memory limit", "gomaxprocs", runtime.GOMAXPROCS(0))
		return
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	log.Info("memory limit from the container", "cgroup_limit", limit, "gomemlimit", soft, "file", path,
		"gomaxprocs", runtime.GOMAXPROCS(0))
}

// FromCgroup returns the memory limit in bytes of this process's cgroup, v2
// or v1, found under root (the file system root outside tests), and the
// file it came from; 0 when there is none.
func FromCgroup(root string) (int64, string) {
	data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, ""
	}
	var candidates []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			candidates = append(candidates,
				filepath.Join(root, "sys/fs/cgroup", parts[2], "memory.max"),
				filepath.Join(root, "sys/fs/cgroup/memory.max"))
		case hasController(parts[1], "memory"):
			candidates = append(candidates,
				filepath.Join(root, "sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"),
				filepath.Join(root, "sys/fs/cgroup/memory/memory.limit_in_bytes"))
		}
	}
	for _, path := range candidates {
		if limit, ok := readLimit(path); ok {
			return limit, path
		}
	}
	return 0, ""
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readLimit reads one limit file; ok is false when it is missing or says
// there is no limit.
func readLimit(path string) (int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= unlimited {
		return 0, false
	}
	return n, true
}
