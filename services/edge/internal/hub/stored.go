package hub

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
)

// topicSubjects are the subjects of user, group and session topics: the
// history stream's republished ones when history is on.
type topicSubjects struct {
	user, group, session func(string) string
}

func newTopicSubjects(cfg Config) topicSubjects {
	s := cfg.Subjects
	if cfg.History {
		return topicSubjects{user: s.OutUser, group: s.OutGroup, session: s.OutSession}
	}
	return topicSubjects{user: s.SendUser, group: s.SendGroup, session: s.SendSession}
}

// republished reads a message the history stream republished: rest is its
// subject after the prefix ("out.<target>"). A message without a valid
// sequence was not published by the stream and is refused.
func (h *Hub) republished(rest string, m *nats.Msg) (target string, seq uint64, ok bool) {
	if !h.cfg.History {
		return "", 0, false
	}
	if target, ok = strings.CutPrefix(rest, "out."); !ok {
		return "", 0, false
	}
	if m.Header != nil {
		seq, _ = strconv.ParseUint(m.Header.Get(wire.HeaderSequence), 10, 64)
	}
	if seq == 0 {
		h.cfg.Stats.BadOutbound()
		return "", 0, false
	}
	return target, seq, true
}
