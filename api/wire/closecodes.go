package wire

// WebSocket close codes of DESIGN.md §2: the one list the edge closes with
// and the clients read. Codes 1000–1015 are RFC 6455's (§7.4.1) and IANA's;
// the 4xxx codes are wsgate's own, named after the HTTP status they echo.
const (
	// CloseNormal: the connection did what it was for (a kick, the client's
	// own close); the client does not reconnect after a kick.
	CloseNormal = 1000
	// CloseGoingAway: the edge is shutting down; reconnect elsewhere.
	CloseGoingAway = 1001
	// CloseProtocolError: the peer broke RFC 6455 (reserved bits or
	// opcodes, an unmasked client frame, a fragmented or oversized control
	// frame, a bad continuation, a bad close payload or code).
	CloseProtocolError = 1002
	// CloseUnsupportedData: a binary message; wsgate's frames are text.
	CloseUnsupportedData = 1003
	// CloseNoStatus stands for a close frame without a code. It is never
	// sent as a code: an empty close frame carries it (RFC 6455 §7.4.1).
	CloseNoStatus = 1005
	// CloseAbnormal: the connection ended without a close frame (a dead
	// peer, a dead edge). It is never sent; it is what the other side
	// reports, and what the Client/disconnection event carries then.
	CloseAbnormal = 1006
	// CloseInvalidUTF8: a text message that is not valid UTF-8, failed as
	// soon as the invalid byte arrived.
	CloseInvalidUTF8 = 1007
	// ClosePolicy: the application-level rule of DESIGN §2 — a second bad
	// frame (not a [action, details] array) within the minute.
	ClosePolicy = 1008
	// CloseTooLarge: a message larger than the edge accepts.
	CloseTooLarge = 1009
	// CloseInternal: the edge failed; reconnect.
	CloseInternal = 1011
	// CloseRestart: the edge is draining or restarting; reconnect.
	CloseRestart = 1012
	// CloseTryLater: the edge or a service behind it is overloaded or
	// unavailable; reconnect after a backoff.
	CloseTryLater = 1013
	// CloseTokenExpired: the token expired; get a fresh one and reconnect.
	CloseTokenExpired = 4001
	// CloseAuthFailed: authentication failed; reconnecting with the same
	// credentials cannot help.
	CloseAuthFailed = 4401
	// CloseForbidden: the origin or the application refused the connection.
	CloseForbidden = 4403
	// CloseAuthTimeout: no authentication arrived in time.
	CloseAuthTimeout = 4408
	// CloseRateLimited: the client kept sending over its rate limit.
	CloseRateLimited = 4429
	// CloseSlowConsumer: the client did not read fast enough and its send
	// queue filled up.
	CloseSlowConsumer = 4500
)

// FinalCloseCodes are the close codes after which a client must not
// reconnect on its own (DESIGN §2): the same credentials would be refused
// again. Every other code, 4001 included (fresh token, then reconnect), is
// followed by a reconnect with backoff. The JS client's FINAL_CLOSE_CODES
// must list exactly these (TestFinalCloseCodes_JSClientAgrees, services/edge).
func FinalCloseCodes() []int { return []int{CloseAuthFailed, CloseForbidden} }
