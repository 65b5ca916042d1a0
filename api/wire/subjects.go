package wire

// DefaultPrefix is the default subject prefix (WS_SUBJECT_PREFIX).
const DefaultPrefix = "ws"

// Subjects builds the NATS subjects of DESIGN.md §4 under one prefix. The ids
// and actions passed in must be valid (ValidateID, ValidateAction): the
// builders do not check, so that the hot path does not pay twice.
type Subjects struct {
	Prefix string
}

// NewSubjects returns the subject builder for prefix ("" = DefaultPrefix).
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{Prefix: prefix}
}

// In is <prefix>.in.<action>, where the edge publishes inbound envelopes.
func (s Subjects) In(action string) string { return s.Prefix + ".in." + action }

// InAll is <prefix>.in.>, every inbound envelope.
func (s Subjects) InAll() string { return s.Prefix + ".in.>" }

// SendAll is <prefix>.send.all: every connection.
func (s Subjects) SendAll() string { return s.Prefix + ".send.all" }

// SendUsers is <prefix>.send.users: every authenticated connection.
func (s Subjects) SendUsers() string { return s.Prefix + ".send.users" }

// SendUser is <prefix>.send.user.<user>.
func (s Subjects) SendUser(user string) string { return s.Prefix + ".send.user." + user }

// SendGroup is <prefix>.send.group.<group>.
func (s Subjects) SendGroup(group string) string { return s.Prefix + ".send.group." + group }

// SendSession is <prefix>.send.session.<session>.
func (s Subjects) SendSession(session string) string { return s.Prefix + ".send.session." + session }

// SendConn is <prefix>.send.conn.<connection>, where connection is "<edge>.<conn>".
func (s Subjects) SendConn(connection string) string { return s.Prefix + ".send.conn." + connection }

// SendFilter is <prefix>.send.filter.
func (s Subjects) SendFilter() string { return s.Prefix + ".send.filter" }

// CloseUser is <prefix>.ctl.close.user.<user>.
func (s Subjects) CloseUser(user string) string { return s.Prefix + ".ctl.close.user." + user }

// CloseSession is <prefix>.ctl.close.session.<session>.
func (s Subjects) CloseSession(session string) string {
	return s.Prefix + ".ctl.close.session." + session
}

// CloseConn is <prefix>.ctl.close.conn.<connection>.
func (s Subjects) CloseConn(connection string) string {
	return s.Prefix + ".ctl.close.conn." + connection
}
