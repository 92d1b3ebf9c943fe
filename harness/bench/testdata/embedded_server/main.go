// Command embedded_server is the baseline of the idle memory benchmark
// (BenchmarkUpIdleRSS): the NATS server with JetStream embedded the way
// pnp up embeds it (internal/embedded), and nothing else. Usage:
//
//	embedded_server PORT STORE_DIR
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/pnpworker/pnpworker/internal/embedded"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: embedded_server PORT STORE_DIR")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "port:", err)
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: os.Args[2]})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-stop
	srv.Shutdown()
	srv.WaitForShutdown()
}
