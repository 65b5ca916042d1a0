package gateway

import (
	"net/http"

	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// deflateOffer is an accepted permessage-deflate offer and the response
// header that says so.
type deflateOffer struct {
	wsconn.Deflate
	header http.Header // nil when nothing was negotiated
}

// extensionsHeader is the response header's name as written on the wire.
// The upgrader refuses an application's Sec-WebSocket-Extensions under its
// canonical key (Sec-Websocket-Extensions) because its own Conn would not
// know the extension; the edge never uses that Conn (wsconn frames every
// message), so the header is set under this non-canonical key, which the
// upgrader writes as given. TestCompressionNegotiated fails if a gorilla
// release closes that door.
const extensionsHeader = "Sec-WebSocket-Extensions"

// negotiateDeflate accepts the request's permessage-deflate offer, if the
// edge compresses and the client offers one it can honour.
func (g *Gateway) negotiateDeflate(r *http.Request) (deflateOffer, bool) {
	if !g.cfg.Compression {
		return deflateOffer{}, false
	}
	d, ok := wsconn.NegotiateDeflate(r.Header.Values("Sec-WebSocket-Extensions"))
	if !ok {
		return deflateOffer{}, false
	}
	return deflateOffer{Deflate: d, header: http.Header{extensionsHeader: {d.Response}}}, true
}
