package admin

import (
	"net/http"

	"github.com/ctxprop/ctxprop/httpapi"
)

// ReadBody reads the whole body of r, at most limit bytes, for any handler on the admin
// listener (those of Server.Handle too), and returns the *Error to answer (with WriteError)
// when it cannot: 413 as soon as the body passes limit, 408 when it stalls longer than
// Options.BodyReadTimeout between two reads (httpapi.ReadBody).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Error) {
	return httpapi.ReadBody(w, r, limit)
}

// timeBodyReads bounds the wait for each read of r's body by Options.BodyReadTimeout
// (httpapi.TimeBodyReads).
func (s *Server) timeBodyReads(w http.ResponseWriter, r *http.Request) {
	httpapi.TimeBodyReads(w, r, s.opt.BodyReadTimeout)
}
