package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestHistoryFlag_Refusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-start", "wsgate", "-history", "disk"}, "not off, memory or file"},
		{[]string{"-start", "centrifugo", "-history", "memory"}, "wsgate's"},
		{[]string{"-url", "ws://127.0.0.1:1/ws", "-secret", "s", "-history", "memory"}, "needs -start wsgate"},
	} {
		err := run(context.Background(), c.args, strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}
