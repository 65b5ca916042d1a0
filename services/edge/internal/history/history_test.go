package history_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEnsure_EdgesStartingTogetherAllSucceed: several edges create or
// update the stream at the same moment; each one succeeds and sees the
// same epoch.
func TestEnsure_EdgesStartingTogetherAllSucceed(t *testing.T) {
	ns := testkit.RunJetStream(t)
	const edges = 6
	hs := make([]*history.History, edges)
	for i := range hs {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		hs[i], err = history.New(nc, history.Config{Storage: history.StorageMemory, Stream: "WS_HISTORY",
			Subjects: wire.NewSubjects(""), MaxAge: time.Minute, MaxPerSubject: 10, MaxBytes: -1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, edges)
	for i, h := range hs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs[i] = h.Ensure(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("edge %d: %v", i, err)
		}
		if hs[i].Ready() != nil || hs[i].Epoch() == "" || hs[i].Epoch() != hs[0].Epoch() {
			t.Fatalf("edge %d: ready %v, epoch %q (edge 0: %q)", i, hs[i].Ready(), hs[i].Epoch(), hs[0].Epoch())
		}
	}
}
