package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ActionRecovery is the edge's answer to a connection's start when history
// is on (DESIGN.md §8): details Recovery, then Recovery.Count replayed frames.
const ActionRecovery = "Server/recovery"

// HeaderSequence is the header of a message republished by the history
// stream that holds its stream sequence.
const HeaderSequence = "Nats-Sequence"

// MaxSinceSeq is the largest sequence a client may name in since: JSON
// numbers beyond 2^53 lose precision in browsers, and no stream gets there.
const MaxSinceSeq = 1<<53 - 1

// Recovery is the details of ActionRecovery.
type Recovery struct {
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
	// Seq is the position the connection starts from, for its next since:
	// since's seq when recovered, otherwise a sequence at or before the
	// first live message it can get (0: the stream's start), so that even
	// a connection that receives nothing stored has a position to recover
	// from.
	Seq uint64 `json:"seq"`
}

// Since is a client's position in the history: the last sequence it
// received in the stream's incarnation Epoch.
type Since struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// ErrBadSince is wrapped by the errors of ParseSince and ParseSinceQuery.
var ErrBadSince = errors.New("wire: invalid since")

// maxEpochLen bounds the epoch a client may send; ours are far shorter.
const maxEpochLen = 64

// ParseSince decodes the since member of Client/authentication details:
// {"epoch": "<e>", "seq": <n>} with n an integer in [0, MaxSinceSeq].
func ParseSince(raw json.RawMessage) (Since, error) {
	var v struct {
		Epoch *string         `json:"epoch"`
		Seq   json.RawMessage `json:"seq"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&v); err != nil {
		return Since{}, fmt.Errorf(`%w: want {"epoch": "<epoch>", "seq": <integer>}`, ErrBadSince)
	}
	if v.Epoch == nil || len(v.Seq) == 0 {
		return Since{}, fmt.Errorf("%w: epoch and seq are required", ErrBadSince)
	}
	return newSince(*v.Epoch, string(v.Seq)) // a string, a fraction or a sign fails ParseUint
}

// ParseSinceQuery decodes the ?since=<epoch>:<seq> upgrade parameter.
func ParseSinceQuery(q string) (Since, error) {
	i := strings.LastIndexByte(q, ':')
	if i < 0 {
		return Since{}, fmt.Errorf("%w: want <epoch>:<seq>", ErrBadSince)
	}
	return newSince(q[:i], q[i+1:])
}

func newSince(epoch, seq string) (Since, error) {
	if epoch == "" || len(epoch) > maxEpochLen {
		return Since{}, fmt.Errorf("%w: epoch must be 1-%d characters", ErrBadSince, maxEpochLen)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n > MaxSinceSeq {
		return Since{}, fmt.Errorf("%w: seq must be an integer from 0 to %d", ErrBadSince, uint64(MaxSinceSeq))
	}
	return Since{Epoch: epoch, Seq: n}, nil
}

// AppendServerFrameSeq appends [action, details, ref|null, seq] to dst: a
// stored message with its history sequence (DESIGN.md §8).
func AppendServerFrameSeq(dst []byte, action string, details, ref json.RawMessage, seq uint64) []byte {
	dst = append(dst, `["`...)
	dst = append(dst, action...)
	dst = append(dst, `",`...)
	if len(details) == 0 {
		details = null
	}
	dst = append(dst, details...)
	dst = append(dst, ',')
	if ref = bytes.TrimSpace(ref); len(ref) > 0 {
		dst = append(dst, ref...)
	} else {
		dst = append(dst, null...)
	}
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, ']')
}

// HistorySubjects are the subjects the history stream stores: every
// <prefix>.send.* target except conn (DESIGN.md §8).
func (s Subjects) HistorySubjects() []string {
	p := s.Prefix + ".send."
	return []string{p + "all", p + "users", p + "filter", p + "user.*", p + "group.*", p + "session.*"}
}

// SendAny is <prefix>.send.>, the republish source of the history stream.
func (s Subjects) SendAny() string { return s.Prefix + ".send.>" }

// OutAny is <prefix>.out.>, where the history stream republishes.
func (s Subjects) OutAny() string { return s.Prefix + ".out.>" }

// OutAll is <prefix>.out.all, a stored SendAll message.
func (s Subjects) OutAll() string { return s.Prefix + ".out.all" }

// OutUsers is <prefix>.out.users.
func (s Subjects) OutUsers() string { return s.Prefix + ".out.users" }

// OutFilter is <prefix>.out.filter.
func (s Subjects) OutFilter() string { return s.Prefix + ".out.filter" }

// OutUser is <prefix>.out.user.<user>.
func (s Subjects) OutUser(user string) string { return s.Prefix + ".out.user." + user }

// OutGroup is <prefix>.out.group.<group>.
func (s Subjects) OutGroup(group string) string { return s.Prefix + ".out.group." + group }

// OutSession is <prefix>.out.session.<session>.
func (s Subjects) OutSession(session string) string { return s.Prefix + ".out.session." + session }
