package history_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/edge/internal/history"
)

// TestHoldsAll: a replay's consumer may run on the stream's leader, or on a
// replica its leader reports current and without lag; not on one that lags,
// is offline or is unknown. Fails when a consumer's host is not checked
// (TestHistory_EdgeNATSOutage_DuringARecoveryIsCaughtUpToo shows the gap a
// lagging replica leaves).
func TestHoldsAll(t *testing.T) {
	c := &jetstream.ClusterInfo{Leader: "n1", Replicas: []*jetstream.PeerInfo{
		{Name: "n2", Current: true},
		{Name: "n3", Current: false},
		{Name: "n4", Current: true, Lag: 3},
		{Name: "n5", Current: true, Offline: true},
	}}
	for host, want := range map[string]bool{"n1": true, "n2": true, "n3": false, "n4": false, "n5": false, "n6": false, "": false} {
		if got := history.HoldsAll(c, host); got != want {
			t.Errorf("holdsAll(%q) = %v, want %v", host, got, want)
		}
	}
	if !history.HoldsAll(nil, "") {
		t.Error("without a cluster the one server holds everything")
	}
}
