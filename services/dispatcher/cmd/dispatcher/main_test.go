package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunRefusesBadEnvNamingTheVariable(t *testing.T) {
	tests := []struct{ env, value string }{
		{"DISPATCHER_CONCURRENCY", "abc"},
		{"DISPATCHER_CONCURRENCY", "-1"},
		{"LOG_LEVEL", "chatty"},
		{"WS_SUBJECT_PREFIX", "ws.*"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			var out bytes.Buffer
			err := run(t.Context(), &out)
			if err == nil {
				t.Fatal("run accepted the bad value")
			}
			if msg := err.Error(); !strings.Contains(msg, tt.env) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q should be one line naming %s", msg, tt.env)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer the service can log to while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listenAddr finds the address in the "dispatcher listening" log line.
func listenAddr(logs string) (string, error) {
	for line := range strings.Lines(logs) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "dispatcher listening" {
			return rec.Addr, nil
		}
	}
	return "", fmt.Errorf("no listening line yet in:\n%s", logs)
}

func TestRunStartsFromEnvAndStopsOnCancel(t *testing.T) {
	srv := natstest.RunServer(t)
	t.Setenv("NATS_URL", srv.ClientURL())
	t.Setenv("DISPATCHER_ADDR", "127.0.0.1:0")
	t.Setenv("NATS_PASSWORD", "s3cret")
	t.Setenv("DISPATCHER_API_KEYS", "api-key-never-logged-0123")
	t.Setenv("LOG_FORMAT", "json")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, &logs) }()

	var addr string
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() (err error) {
		addr, err = listenAddr(logs.String())
		return err
	})
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d", resp.StatusCode)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(natstest.Wait):
		t.Fatal("run did not return after cancel")
	}
	out := logs.String()
	if strings.Contains(out, "s3cret") {
		t.Fatal("the NATS password was logged")
	}
	if strings.Contains(out, "api-key-never-logged") {
		t.Fatal("an API key was logged")
	}
	if !strings.Contains(out, `"DISPATCHER_CONCURRENCY":64`) {
		t.Fatalf("the configuration was not logged at start:\n%s", out)
	}
}
