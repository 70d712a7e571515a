package proxy

import (
	"net"
	"testing"
	"time"
)

func TestConnectionsOpenedAheadExpire(t *testing.T) {
	p := preconnects{conns: map[string][]preconn{}}
	oldC, oldS := net.Pipe()
	newC, newS := net.Pipe()
	defer newS.Close()
	defer oldS.Close()
	p.put("10.0.0.1:8080", oldC)
	p.conns["10.0.0.1:8080"][0].at = time.Now().Add(-2 * preconnectKeep)
	p.put("10.0.0.1:8080", newC)
	p.expire("10.0.0.1:8080")
	if _, err := oldC.Write([]byte("x")); err == nil {
		t.Error("a connection kept longer than preconnectKeep is still open")
	}
	if got := p.take("10.0.0.1:8080"); got != newC {
		t.Errorf("take = %v, want the connection opened lately", got)
	}
	if got := p.take("10.0.0.1:8080"); got != nil || p.n.Load() != 0 {
		t.Errorf("take = %v with %d counted, want nothing left", got, p.n.Load())
	}
	if got := p.take("10.0.0.2:8080"); got != nil {
		t.Errorf("take of another address = %v, want nil", got)
	}
}
