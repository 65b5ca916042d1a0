package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
)

// MaxStored is how many joined groups one user or session may hold; a join
// beyond it is refused.
const MaxStored = 256

// maxCASRetries bounds the read-modify-write attempts of one change when
// other edges change the same key at the same time.
const maxCASRetries = 50

// ErrTooMany: a join would give a user or session more than MaxStored groups.
var ErrTooMany = errors.New("rooms: too many joined groups")

// Store keeps the joined groups of users and sessions in a NATS KV bucket,
// one key per target: "user.<u>" or "session.<s>", the id escaped (see
// Key), the value {"groups": [...]}. The bucket is created (or its config
// updated) on first use, so that an edge may start before NATS is there.
type Store struct {
	js     jetstream.JetStream      // static
	config jetstream.KeyValueConfig // static
	mu     sync.Mutex               // guards kv
	kv     jetstream.KeyValue       // nil until the bucket is bound
}

// NewStore returns a store of the bucket named bucket on nc; file chooses
// file storage over memory.
func NewStore(nc *nats.Conn, bucket string, file bool) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("rooms: jetstream: %w", err)
	}
	storage := jetstream.MemoryStorage
	if file {
		storage = jetstream.FileStorage
	}
	return &Store{js: js, config: jetstream.KeyValueConfig{
		Bucket: bucket, Description: "wsgate joined groups of users and sessions (DESIGN §9)",
		History: 1, Storage: storage,
	}}, nil
}

func (s *Store) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, s.config)
	if err != nil {
		return nil, fmt.Errorf("rooms: bucket %s: %w", s.config.Bucket, err)
	}
	s.kv = kv
	return kv, nil
}

// Key is the KV key of a user or session: "<kind>.<id>", where the id's
// characters that KV keys do not allow (@ + ~ :) and "=" itself are
// written =XX (hex), so "42" stays "user.42" and "a@b" is "user.a=40b".
func Key(kind, id string) string {
	var b strings.Builder
	b.WriteString(kind)
	b.WriteByte('.')
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '@', '+', '~', ':', '=':
			fmt.Fprintf(&b, "=%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

type value struct {
	Groups []string `json:"groups"`
}

// Load returns the stored groups of a target and their revision (0 when
// nothing is stored).
func (s *Store) Load(ctx context.Context, kind, key string) (uint64, []string, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return 0, nil, err
	}
	e, err := kv.Get(ctx, Key(kind, key))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil, nil
	case err != nil:
		return 0, nil, fmt.Errorf("rooms: load %s: %w", Key(kind, key), err)
	}
	var v value
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return 0, nil, fmt.Errorf("rooms: stored %s is not a membership: %w", Key(kind, key), err)
	}
	return e.Revision(), v.Groups, nil
}

// Change adds groups to the stored set of a target (join), or removes them,
// with compare-and-set so that concurrent changes on other edges are not
// lost, and returns the new set and its revision.
func (s *Store) Change(ctx context.Context, kind, key string, groups []string, join bool) (uint64, []string, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return 0, nil, err
	}
	k := Key(kind, key)
	for range maxCASRetries {
		rev, cur, err := s.Load(ctx, kind, key)
		if err != nil {
			return 0, nil, err
		}
		next := slices.Clone(cur)
		if join {
			for _, g := range groups {
				if !slices.Contains(next, g) {
					next = append(next, g)
				}
			}
			if len(next) > MaxStored {
				return 0, nil, fmt.Errorf("%w: %s %s would have %d (at most %d)", ErrTooMany, kind, key, len(next), MaxStored)
			}
		} else {
			next = slices.DeleteFunc(next, func(g string) bool { return slices.Contains(groups, g) })
		}
		if next == nil {
			next = []string{}
		}
		data, _ := json.Marshal(value{Groups: next})
		var nrev uint64
		if rev == 0 {
			nrev, err = kv.Create(ctx, k, data)
		} else {
			nrev, err = kv.Update(ctx, k, data, rev)
		}
		switch {
		case err == nil:
			return nrev, next, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // another edge changed it first: read again
		default:
			return 0, nil, fmt.Errorf("rooms: store %s: %w", k, err)
		}
	}
	return 0, nil, fmt.Errorf("rooms: store %s: too many concurrent changes", k)
}

var _ hub.Loader = (*Store)(nil)

// validKind reports whether kind is a join target kind.
func validKind(kind string) bool {
	return kind == wire.KindUser || kind == wire.KindSession || kind == wire.KindConn
}
