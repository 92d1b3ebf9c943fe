// Package replycheck checks what runners answer the way the controller
// does before it stores a result, for the dispatcher and for the other
// callers of run.<algorithm> (the HTTP gateway): a success's output against
// the output schema its instance registered in discovery (ReplyChecker),
// an error's code mapped into the protocol's set (ProtocolCode).
//
// Its Cache compiles registered schemas once per schema content, bounded
// in estimated bytes of heap, each compile bounded in time; the controller
// also checks jobs' inputs with it. The package imports discovery,
// schemas and protocol, never the controller or the gateway, so both can
// share it.
package replycheck
