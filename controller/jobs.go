package controller

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
)

// The job pipeline's names, records, storage and errors are package
// jobs's, the jobs client that producers, the gateway and the CLI use; the
// controller dispatches over them. These aliases keep the dispatcher's
// callers (cmd/pnp's controller command, the harnesses, tests) compiling
// with the names they have always used.

// Streams, subjects and buckets of the job pipeline (see package jobs).
const (
	JobsStream           = jobs.JobsStream
	JobsSubjectPrefix    = jobs.JobsSubjectPrefix
	DeadStream           = jobs.DeadStream
	DeadSubjectPrefix    = jobs.DeadSubjectPrefix
	DeadInvalidAlgorithm = jobs.DeadInvalidAlgorithm
	ResultsBucket        = jobs.ResultsBucket
	InputsBucket         = jobs.InputsBucket
	UploadsBucket        = jobs.UploadsBucket
	OutputsBucket        = jobs.OutputsBucket
	ServedBucket         = jobs.ServedBucket
	NotifySubjectPrefix  = jobs.NotifySubjectPrefix
)

// Limits of the streams and buckets: jobs.StoreConfig's defaults.
const (
	DefaultInputTTL        = jobs.DefaultInputTTL
	DefaultObjectsMaxBytes = jobs.DefaultObjectsMaxBytes
	DefaultUploadsMaxBytes = jobs.DefaultUploadsMaxBytes
	DefaultJobsMaxBytes    = jobs.DefaultJobsMaxBytes
	DefaultDeadMaxBytes    = jobs.DefaultDeadMaxBytes
	DefaultResultsMaxBytes = jobs.DefaultResultsMaxBytes
)

// Job and dead letter headers (see package jobs).
const (
	HeaderMsgID              = jobs.HeaderMsgID
	HeaderJobID              = jobs.HeaderJobID
	HeaderTimeout            = jobs.HeaderTimeout
	HeaderNotify             = jobs.HeaderNotify
	HeaderDeadReason         = jobs.HeaderDeadReason
	HeaderDeadCode           = jobs.HeaderDeadCode
	HeaderDeadAttempts       = jobs.HeaderDeadAttempts
	HeaderDeadAt             = jobs.HeaderDeadAt
	HeaderJobSeq             = jobs.HeaderJobSeq
	HeaderSubmittedAt        = jobs.HeaderSubmittedAt
	HeaderDeadError          = jobs.HeaderDeadError
	HeaderDeadBodyOmitted    = jobs.HeaderDeadBodyOmitted
	HeaderDeadHeadersOmitted = jobs.HeaderDeadHeadersOmitted
)

// Result statuses (see package jobs).
const (
	StatusSucceeded = jobs.StatusSucceeded
	StatusFailed    = jobs.StatusFailed
	StatusRetrying  = jobs.StatusRetrying
	StatusCancelled = jobs.StatusCancelled
	StatusRunning   = jobs.StatusRunning
)

// Types of package jobs.
type (
	Store         = jobs.Store
	StoreConfig   = jobs.StoreConfig
	ObjectsConfig = jobs.ObjectsConfig
	Result        = jobs.Result
	Status        = jobs.Status
	SubmitOptions = jobs.SubmitOptions
	Submission    = jobs.Submission
	FileOptions   = jobs.FileOptions
	DeadLetter    = jobs.DeadLetter
	Queue         = jobs.Queue
)

// Errors of package jobs.
var (
	ErrAlgorithmFull   = jobs.ErrAlgorithmFull
	ErrCorruptResult   = jobs.ErrCorruptResult
	ErrJobsFull        = jobs.ErrJobsFull
	ErrNoObjectStore   = jobs.ErrNoObjectStore
	ErrNoResult        = jobs.ErrNoResult
	ErrNotNotification = jobs.ErrNotNotification
	ErrNotifyCaptured  = jobs.ErrNotifyCaptured
	ErrTooLarge        = jobs.ErrTooLarge
)

// Provision is jobs.Provision.
func Provision(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	return jobs.Provision(ctx, js, cfg)
}

// OpenStore is jobs.OpenStore.
func OpenStore(ctx context.Context, js jetstream.JetStream, cfg StoreConfig) (*Store, error) {
	return jobs.OpenStore(ctx, js, cfg)
}

// DecodeResult is jobs.DecodeResult.
func DecodeResult(key string, data []byte) (Result, error) { return jobs.DecodeResult(key, data) }

// DecodeNotification is jobs.DecodeNotification.
func DecodeNotification(m *nats.Msg) (Result, error) { return jobs.DecodeNotification(m) }

// ValidJobID is jobs.ValidJobID.
func ValidJobID(id string) bool { return jobs.ValidJobID(id) }

// ReservedJobID is jobs.ReservedJobID.
func ReservedJobID(id string) bool { return jobs.ReservedJobID(id) }

// ValidNotifySubject is jobs.ValidNotifySubject.
func ValidNotifySubject(subj string) bool { return jobs.ValidNotifySubject(subj) }
