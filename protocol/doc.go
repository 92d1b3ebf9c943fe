// Package protocol is the wire protocol between pnpworker's runners and
// their callers, the vocabulary both sides share without either importing
// the other: the request subjects (plain and pinned) and those of the job
// pipeline, the rules for algorithm names, instance ids and job ids, the
// header names, the error codes and which of them are worth a retry, the
// error type with its JSON body, the reading of an error reply, the trace
// context, and the refusal of what JetStream delivers. docs/PROTOCOL.md describes the
// protocol; each of its tables names the identifiers here.
//
// The runner library serves this protocol; the controller, the gateway,
// the rollout tools and the image fetcher speak it as clients. Like nats.go
// micro, which keeps its error headers and subjects with the service API,
// the protocol lives in one package, and clients import its names rather
// than the server.
package protocol
