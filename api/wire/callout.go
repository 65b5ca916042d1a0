package wire

// CalloutRequest is what the edge sends to EDGE_AUTH_CALLOUT_SUBJECT to learn
// who a connection belongs to (DESIGN.md §3).
type CalloutRequest struct {
	Edge       string            `json:"edge"`
	RemoteAddr string            `json:"remote_addr"`
	Token      string            `json:"token,omitempty"`
	Cookies    map[string]string `json:"cookies,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
}

// CalloutResponse is the reply to a CalloutRequest: an identity, or Error.
type CalloutResponse struct {
	User     string            `json:"user,omitempty"`
	Session  string            `json:"session,omitempty"`
	Groups   []string          `json:"groups,omitempty"`
	Language string            `json:"language,omitempty"`
	Expires  int64             `json:"expires,omitempty"` // Unix seconds; 0 = none
	Props    map[string]string `json:"props,omitempty"`
	Error    *CalloutError     `json:"error,omitempty"`
}

// CalloutError refuses a connection; Code is 401 or 403 by convention.
type CalloutError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}
