// Command floor_responder is the floor of the start-up benchmark
// (BenchmarkStartup): a process that connects to NATS and answers requests
// on one subject in a queue group, and nothing else. Usage:
//
//	floor_responder URL SUBJECT QUEUE
//
// It answers every request with an empty JSON object and stops on SIGINT or
// SIGTERM, once its subscription is drained.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: floor_responder URL SUBJECT QUEUE")
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	closed := make(chan struct{})
	nc, err := nats.Connect(os.Args[1], nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := nc.QueueSubscribe(os.Args[2], os.Args[3], func(m *nats.Msg) { _ = m.Respond([]byte("{}")) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-stop
	// Drain returns at once: wait until the server has dropped the
	// subscription and the connection is closed, so that a request sent
	// after this process exited never reaches it.
	if err := nc.Drain(); err == nil {
		<-closed
	}
}
