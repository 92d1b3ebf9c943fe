package main

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"pnpworker/runner"
)

// jsPrefixFlag is --js-api-prefix: the subject prefix under which a
// runner's account reaches the JetStream API of the account holding the
// streams and buckets. nats.conf puts every runner team in an account of
// its own that imports that API as $JS.APP.API.
type jsPrefixFlag struct{ prefix string }

func (f *jsPrefixFlag) register(fs *flagSet) {
	fs.StringVar(&f.prefix, "js-api-prefix", env("NATS_JS_API_PREFIX", ""),
		"JetStream API prefix, for a runner team's account that imports the JetStream of another account, e.g. '$JS.APP.API' under nats.conf; empty: $JS.API, the account's own (env NATS_JS_API_PREFIX)")
}

// check reports a prefix that is not a subject prefix, before connecting.
func (f *jsPrefixFlag) check() error {
	if f.prefix == "" {
		return nil
	}
	if err := runner.CheckJetStreamAPIPrefix(f.prefix); err != nil {
		return fmt.Errorf("%w: --js-api-prefix (NATS_JS_API_PREFIX): %v", errUsage, err)
	}
	return nil
}

// jetStream is nc's JetStream context under the prefix.
func (f *jsPrefixFlag) jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	if f.prefix == "" {
		return jetstream.New(nc)
	}
	return jetstream.NewWithAPIPrefix(nc, f.prefix)
}

// runnerOptions are the runner options that apply the prefix.
func (f *jsPrefixFlag) runnerOptions() []runner.Option {
	if f.prefix == "" {
		return nil
	}
	return []runner.Option{runner.WithJetStreamAPIPrefix(f.prefix)}
}
