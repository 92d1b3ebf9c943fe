// Package jobs is the jobs client: what producers, the HTTP gateway, the
// pnp CLI and any Go program use to submit jobs and read their outcomes
// without running the dispatcher (package controller).
//
// It owns the job pipeline's names and records — streams JOBS and DEAD,
// the results bucket, the inputs, uploads and outputs object stores, the
// job and dead-letter headers, the result record (Result, DecodeResult,
// DecodeNotification) — and their set-up: Provision creates or updates
// every stream and bucket, OpenStore binds to them for a client that may
// not create them. A Store then offers the producer's operations: Submit
// and SubmitFile (with SubmitOptions), Result and WaitResult, DeadLetters
// and Replay, Queues, PutInput and PutUpload, Output and OpenObject for
// data by reference.
//
// The controller imports this package and dispatches the jobs stored here;
// this package imports neither the controller nor the runner library.
// Wire names shared with runners (subjects, headers, error codes, id
// rules) are package protocol's.
package jobs
