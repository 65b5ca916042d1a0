// Command wsgate-classic prints the client as the edge serves it: the classic
// script by default, the ES module with -module. The JS tests use it to get
// the classic build without a copy of the Go transform.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"os"

	jsclient "github.com/wsgate/wsgate/clients/js"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wsgate-classic:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wsgate-classic", flag.ContinueOnError)
	path := fs.String("path", jsclient.DefaultPath, "default WebSocket path to build in")
	module := fs.Bool("module", false, "print the ES module instead of the classic script")
	if err := fs.Parse(args); err != nil {
		return err
	}
	name := "/client.js"
	if *module {
		name = "/client.mjs"
	}
	// Going through Handler prints exactly the bytes an edge would serve.
	rec := httptest.NewRecorder()
	jsclient.Handler(*path).ServeHTTP(rec, httptest.NewRequest("GET", name, nil))
	if rec.Code != 200 {
		return fmt.Errorf("%s: status %d", name, rec.Code)
	}
	_, err := stdout.Write(rec.Body.Bytes())
	return err
}
