// Command floord is the HTTP floor of bench/store/sidecar.sh: a Go net/http server that
// reads each request and answers {"value":1} at once, storing nothing: what the admin
// API's exchange costs without the store. It prints its address and serves until killed.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	addrFile := flag.String("addr-file", "", "write the listening address to this file")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "12")
		w.Write([]byte("{\"value\":1}\n"))
	})))
}
