package main

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/runner"
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

// check reports a prefix that is not a subject prefix, or one given with
// --js-domain (a domain is itself a prefix, $JS.<domain>.API), before
// connecting.
func (f *jsPrefixFlag) check(nf *natsFlags) error {
	if f.prefix == "" {
		return nil
	}
	if nf.jsDomain != "" {
		return fmt.Errorf("%w: --js-api-prefix (NATS_JS_API_PREFIX) and --js-domain (NATS_JS_DOMAIN) exclude each other: a domain is the prefix $JS.<domain>.API", errUsage)
	}
	if err := runner.CheckJetStreamAPIPrefix(f.prefix); err != nil {
		return fmt.Errorf("%w: --js-api-prefix (NATS_JS_API_PREFIX): %v", errUsage, err)
	}
	return nil
}

// jetStream is nc's JetStream context under the prefix, or without one in
// nf's --js-domain.
func (f *jsPrefixFlag) jetStream(nc *nats.Conn, nf *natsFlags) (jetstream.JetStream, error) {
	if f.prefix == "" {
		return nf.jetStream(nc)
	}
	return jetstream.NewWithAPIPrefix(nc, f.prefix)
}

// runnerOptions are the runner options that apply the prefix, or without
// one nf's --js-domain.
func (f *jsPrefixFlag) runnerOptions(nf *natsFlags) []runner.Option {
	if f.prefix == "" {
		return nf.runnerOptions()
	}
	return []runner.Option{runner.WithJetStreamAPIPrefix(f.prefix)}
}
