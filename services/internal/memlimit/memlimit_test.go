package memlimit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromCgroup_ReadsTheContainersLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		files  map[string]string
		want   int64
		wantIn string
	}{
		{
			name: "v2 own cgroup",
			files: map[string]string{
				"proc/self/cgroup":                       "0::/kubepods/pod1\n",
				"sys/fs/cgroup/kubepods/pod1/memory.max": "536870912\n",
			},
			want: 512 << 20, wantIn: "kubepods/pod1/memory.max",
		},
		{
			name: "v2 namespaced root",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "1073741824\n",
			},
			want: 1 << 30, wantIn: "sys/fs/cgroup/memory.max",
		},
		{
			name: "v2 no limit",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
			},
		},
		{
			name: "v1",
			files: map[string]string{
				"proc/self/cgroup": "5:devices:/x\n4:memory:/docker/abc\n3:cpu,cpuacct:/x\n",
				"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456",
			},
			want: 256 << 20, wantIn: "docker/abc/memory.limit_in_bytes",
		},
		{
			name: "v1 unlimited",
			files: map[string]string{
				"proc/self/cgroup":                           "4:memory:/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
			},
		},
		{name: "no cgroup file", files: map[string]string{}},
		{
			name: "garbage",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "lots",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, from := FromCgroup(root)
			if got != tc.want {
				t.Fatalf("limit %d, want %d", got, tc.want)
			}
			if !strings.HasSuffix(from, tc.wantIn) {
				t.Fatalf("read from %s, want …%s", from, tc.wantIn)
			}
		})
	}
}
