// Package capacity measures what one process of each kind costs and how far
// one NATS server carries a deployment: requests per runner CPU-second,
// jobs per controller CPU-second, and the price of many runner instances
// heartbeating into the discovery bucket — on the server, and on every
// process that watches the bucket — and of idle whole runners, which also
// read their routes and their algorithms' live instances.
//
// Everything is in its benchmarks (capacity_test.go). Each one starts a
// real nats-server process, built from the module cache, and runs the
// parts it measures as processes of their own — the test binary started
// again in a role — so that the CPU time and memory of each part can be
// read from the operating system, apart from the load generator's.
// docs/SCALING.md lists the commands and the numbers measured with them.
package capacity
