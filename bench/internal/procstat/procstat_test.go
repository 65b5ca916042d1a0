package procstat

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	status := []byte("Name:\tedge\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n")
	if v, err := vmRSS(status); err != nil || v != 12345 {
		t.Fatalf("vmRSS = %d, %v; want 12345", v, err)
	}
	if _, err := vmRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("want an error without VmRSS")
	}
	stat := []byte("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3\n")
	if v, err := cpuTicks(stat); err != nil || v != 325 {
		t.Fatalf("cpuTicks = %d, %v; want 325", v, err)
	}
	if _, err := cpuTicks([]byte("1 (x) S 1")); err == nil {
		t.Fatal("want an error on a short stat")
	}
}

func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 || s.CPUus < 0 {
		t.Fatalf("implausible sample %+v", s)
	}
	if sum := Sum([]Sample{s, s}); sum.RSSKiB != 2*s.RSSKiB {
		t.Fatalf("Sum: %+v", sum)
	}
}
