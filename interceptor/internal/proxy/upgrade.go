package proxy

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// upgradeProtocol is the one protocol a request may switch its connection to through the
// interceptor.
const upgradeProtocol = "websocket"

// admitUpgrade reports whether r asks to switch its connection to a WebSocket (an HTTP/1.1
// Upgrade naming "websocket" in Upgrade and "upgrade" in Connection). Any other Upgrade token is
// dropped from r, so the request is forwarded as an ordinary one and the app answers it as such
// (a server may ignore Upgrade): forwarded, an "Upgrade: h2c" would let a client speak HTTP/2
// straight to the app over a tunnel, past every rule the ingress applies to requests.
func admitUpgrade(r *http.Request) bool {
	up := r.Header["Upgrade"]
	if len(up) == 0 {
		return false
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return false // Upgrade is hop-by-hop: without the Connection token it is not forwarded
	}
	if httpguts.HeaderValuesContainsToken(up, upgradeProtocol) {
		if len(up) != 1 || !strings.EqualFold(up[0], upgradeProtocol) {
			r.Header["Upgrade"] = []string{upgradeProtocol} // drop the other tokens offered
		}
		return true
	}
	delete(r.Header, "Upgrade")
	return false
}
