// Command evident is the one binary of Evident: the service and the
// developer's replay tools.
//
//	evident serve                      run the HTTP API, projections and workflows
//	evident rebuild [projection…]      rebuild read models from position zero
//	evident stream <stream>            print a stream as JSON lines
//	evident state <user-id> [--at T]   fold a user's stream up to time T
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "evident:", err)
		os.Exit(1)
	}
}
