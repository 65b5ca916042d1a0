package main

import "testing"

func TestAddSettingKeepsWhatTheUserSet(t *testing.T) {
	for _, c := range []struct{ list, want string }{
		{"", "schedtrace=2147483647"},
		{"gctrace=1", "gctrace=1,schedtrace=2147483647"},
		{"schedtrace=1000", "schedtrace=1000"},
		{"gctrace=1,schedtrace=5", "gctrace=1,schedtrace=5"},
	} {
		if got := addSetting(c.list, sysmonPace); got != c.want {
			t.Errorf("addSetting(%q) = %q, want %q", c.list, got, c.want)
		}
	}
}
