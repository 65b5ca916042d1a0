package wire

// Subjects of reliable inbound (DESIGN.md §4, §8).

// Inq is <prefix>.inq.<action>: a frame with a message id, stored by the
// inbound work-queue stream until a dispatcher acknowledges it.
func (s Subjects) Inq(action string) string { return s.Prefix + ".inq." + action }

// InqAll is <prefix>.inq.>, the inbound stream's subjects.
func (s Subjects) InqAll() string { return s.Prefix + ".inq.>" }

// Dead is <prefix>.dead.<action>: the envelope of a reliable action whose
// handler failed DISPATCHER_MAX_DELIVER times, with the last error.
func (s Subjects) Dead(action string) string { return s.Prefix + ".dead." + action }

// DeadAll is <prefix>.dead.>, every dead letter.
func (s Subjects) DeadAll() string { return s.Prefix + ".dead.>" }

// Deliver is _WSGATE.<prefix>.<queue>.<action>: the deliver subject of the
// durable push consumer that the dispatchers of queue group queue share for
// action's reliable frames (their deliver group is queue). NATS users of
// dispatchers need to subscribe to _WSGATE.<prefix>.>.
func (s Subjects) Deliver(queue, action string) string {
	return "_WSGATE." + s.Prefix + "." + queue + "." + action
}
