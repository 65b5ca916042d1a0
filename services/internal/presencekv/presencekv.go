// Package presencekv opens the presence KV bucket (DESIGN.md §9) with the one
// configuration every edge and dispatcher agrees on, so that whichever starts
// first creates it and the others find it as they expect.
package presencekv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Modes of WS_PRESENCE.
const (
	Off    = "off"
	Memory = "memory"
	File   = "file"
)

// DefaultBucket is WS_PRESENCE_BUCKET's default.
const DefaultBucket = "wsgate_presence"

// MarkerTTL is how long the bucket keeps the markers of expired leases and
// of deleted connections and users: long enough for every watcher to see
// them, short enough that a churn of connections leaves no lasting
// tombstones (a purge with this TTL removes itself).
const MarkerTTL = time.Minute

// ErrMode is returned for a WS_PRESENCE value other than off, memory, file.
var ErrMode = errors.New("presencekv: mode must be off, memory or file")

// Validate checks a WS_PRESENCE value.
func Validate(mode string) error {
	switch mode {
	case Off, Memory, File:
		return nil
	}
	return fmt.Errorf("%w, got %q", ErrMode, mode)
}

// ValidateBucket checks a WS_PRESENCE_BUCKET value: NATS bucket names are
// letters, digits, '-' and '_'.
func ValidateBucket(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q: a bucket name holds only letters, digits, - and _", name)
		}
	}
	return nil
}

// Open creates the bucket, or updates it to the common configuration, and
// returns it. mode is memory or file.
func Open(ctx context.Context, js jetstream.JetStream, bucket, mode string) (jetstream.KeyValue, error) {
	storage := jetstream.MemoryStorage
	if mode == File {
		storage = jetstream.FileStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bucket,
		Description:    "wsgate presence: edge leases, connections, online users (DESIGN.md §9)",
		History:        1,
		Storage:        storage,
		LimitMarkerTTL: MarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("presencekv: open bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// Subject is the stream subject of key in bucket, for writes the KV API does
// not offer (a TTL on an update).
func Subject(bucket, key string) string { return "$KV." + bucket + "." + key }
