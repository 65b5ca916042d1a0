package load

import "fmt"

// History modes of a wsgate run (-history): WS_HISTORY of every edge the
// tool starts. With history on, natsd runs with JetStream, the edges
// create the history stream, and the publisher's core NATS messages to
// ws.send.* are stored there and reach the clients through its
// republication as [action, details, ref, seq] frames, after a
// Server/recovery frame on every connection (DESIGN.md §8).
const (
	HistoryOff    = "off"
	HistoryMemory = "memory"
	HistoryFile   = "file"
)

// CheckHistory refuses a history mode that is not one of the above, or
// that is on for a gateway other than wsgate.
func CheckHistory(gateway, mode string) error {
	switch mode {
	case HistoryOff:
		return nil
	case HistoryMemory, HistoryFile:
		if gateway != "wsgate" {
			return fmt.Errorf("load: -history %s is wsgate's (WS_HISTORY), not %s's", mode, gateway)
		}
		return nil
	}
	return fmt.Errorf("load: -history %q is not off, memory or file", mode)
}
