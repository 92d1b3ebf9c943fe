// Package interop holds tests that drive a pnpworker runner with the stock
// nats CLI (natscli) and no project tool, proving the protocol in
// docs/PROTOCOL.md is all a client needs: the discovery bucket is a plain KV
// bucket, run.<algorithm> answers plain requests, errors follow the NATS
// micro convention, and every runner is a micro service.
//
// The tests need the nats binary: set NATS_CLI to its path, or put it on
// PATH or in $GOPATH/bin. When it is missing they are skipped, except when
// CI is set, where they fail.
package interop
