package listen

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestPerPeerCap: a peer at its cap has its next connection closed at
// accept; closing one (even twice) frees exactly one place.
func TestPerPeerCap(t *testing.T) {
	ln, err := Config{MaxConnsPerIP: 1, MaxConns: -1}.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}

	dial()
	first := <-accepted
	if second := dial(); !closed(second) {
		t.Fatal("a second connection from the same address was not closed")
	}
	first.Close()
	first.Close() // a second Close frees nothing more
	dial()
	third := <-accepted
	if fourth := dial(); !closed(fourth) {
		t.Fatal("after one closed twice, two connections were let in")
	}
	third.Close()
	pl := ln.(*perPeer)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.open) != 0 {
		t.Fatalf("open counts after every connection closed: %v, want none", pl.open)
	}
}
