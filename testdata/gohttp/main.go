// gohttp: a Go net/http server for the TCP checkpoint tests
// (pkg/restore/servers_test.go). gohttp PORTFILE listens on 127.0.0.1, port
// chosen by the kernel, writes the port to PORTFILE, and answers every
// request with "pid PID hits N", N counting the requests served.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var hits atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid %d hits %d\n", os.Getpid(), hits.Add(1))
	})
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(os.Args[1]+".tmp", []byte(port), 0o644); err != nil {
		os.Exit(1)
	}
	os.Rename(os.Args[1]+".tmp", os.Args[1])
	http.Serve(l, nil)
}
