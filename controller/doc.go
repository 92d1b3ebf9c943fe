// Package controller is the dispatcher of the durable job pipeline: jobs
// wait in JetStream stream JOBS, controllers hand them to runners by
// request-reply, outcomes land in KV bucket "results", and jobs that cannot
// succeed go to stream DEAD. Nothing is lost: a job leaves JOBS only after
// its outcome is stored.
//
// Producers do not need this package: package jobs, the jobs client, owns
// the pipeline's streams, buckets, headers and result record, provisions
// them, and submits, reads, lists and replays jobs. The controller binds
// the same jobs.Store and keeps the names of package jobs as aliases
// (Store, Result, Provision, ...); the schema checks it shares with the
// gateway are package replycheck's.
//
// # Jobs
//
// A job is a message on jobs.<algorithm> whose body is the algorithm's input
// JSON. Any producer can submit one, including the stock CLI:
//
//	nats pub jobs.language_detection '{"text":"Guten Morgen"}' -H Nats-Msg-Id:abc
//	nats kv get results abc
//
// The job id is the Pnp-Job-Id header, else the Nats-Msg-Id header (JOBS
// stores a second message with the same Nats-Msg-Id inside the duplicate
// window once), else — for a producer that sent neither — the controller
// names it auto-<stream sequence>-<stored unix ms>, which every redelivery
// of that message shares and a re-created stream never reuses; it is in the
// result record and the controller's log. A job id is a result key: letters,
// digits, '_', '=', '-' and single inner dots (ValidJobID); a job with
// another id is dead-lettered at once.
//
// Optional headers: Pnp-Timeout (a Go duration) shortens the algorithm's
// time budget for this job; Pnp-Notify names a subject under notify. (see
// ValidNotifySubject) the final result record is published to once stored.
// A job naming any other subject fails with 400: nothing a producer sets
// directs the controller's writes.
//
// # Dispatch
//
// Each algorithm has one durable pull consumer, ConsumerName(algorithm),
// shared by all controller replicas, which split its jobs; and, from its
// first job of priority high or low, one for each of those
// (jobs.PriorityConsumerName; see priority.go). A controller
// consumes an algorithm's jobs only while discovery lists a live runner for
// it, so jobs for an algorithm nobody serves wait in JOBS without being
// delivered at all (no hot loop) and start moving when a runner registers,
// or fail as expired after Config.MaxJobAge — Config.MaxUnservedJobAge
// when no runner has ever registered for the algorithm (a sweep reads them
// from JOBS by sequence; see expire.go).
// The consumer of an algorithm exists from its first waiting job on, also
// when no runner has ever registered for it, and is kept while its jobs
// wait, so that autoscalers (KEDA's nats-jetstream scaler) see the
// backlog (backlog.go); once none wait and no runner is live, JetStream
// deletes it after Config.ConsumerInactiveThreshold, unless the algorithm
// is in Config.KeepConsumers. A controller serves at most
// Config.MaxAlgorithms.
// For each job the controller reads the algorithm's registrations from its
// discovery cache (a KV watcher, no read per job), validates the body
// against the registered input schema (compiled once per schema content,
// in a cache bounded by Config.SchemaCacheBytes; all the distinct schemas
// of the live instances checked within one bounded budget per job, see
// schemas.Limited), and sends it to
// run.<algorithm> — the only subject a registration may name — with the
// job id and time budget in headers. A success reply is stored only when
// its output satisfies the output schema the answering instance
// registered; otherwise the attempt fails with 502. At most Config.MaxInFlight jobs run
// at once per controller; held jobs get progress heartbeats every
// AckWait/4, so a job longer than AckWait is not redelivered while running.
//
// # Failures
//
//   - No responders (a runner registered but gone): the job is handed back
//     with NoRunnerDelay; this is not an attempt.
//   - Timeout, 5xx (500, 502, 503, 504): retried after RetryBackoff, doubling up
//     to MaxRetryBackoff, ±20 % jitter, until MaxAttempts attempts (default
//     5: waits of about 1 s, 2 s, 4 s, 8 s). Between attempts the result
//     key holds a record with status "retrying", the attempt count and the
//     last error; it is what makes attempts survive controller restarts.
//     A timeout whose request spanned a NATS reconnect is not counted.
//   - 4xx (invalid input found by the controller or the runner, 404, 413,
//     422), an invalid job id or Pnp-Timeout header: final at once.
//   - A Pnp-Timeout under MinJobTimeout: final at once with 504, no runner
//     called. A runner refusing the job unstarted because the job's own
//     Pnp-Timeout (shorter than the algorithm's) ran out in its queue: an
//     attempt, like a 504; other refusals unstarted (Pnp-Not-Started) are
//     back-pressure, handed back without an attempt up to MaxNotStarted
//     deliveries.
//
// A final failure stores a dead letter on dead.<algorithm> (original body
// and headers, plus Pnp-Job-Id, Pnp-Dead-Reason, Pnp-Dead-Code,
// Pnp-Dead-Attempts, Pnp-Dead-At, Pnp-Job-Seq, Pnp-Submitted-At and
// Pnp-Dead-Error with the error as JSON), then a result with status
// "failed", then acks the job. jobs.Store.Replay publishes a dead letter again
// under the same job id.
//
// # Exactly one outcome
//
// Results are written compare-and-set: a final record is created only if
// the key is absent or holds a retrying record of the revision this
// delivery read. A redelivered job (controller crash, lost ack, AckWait
// passed during a NATS outage) first reads its key and is just acked when
// an outcome is there; two controllers racing on one job store one outcome
// and the loser acks. Jobs are acked only after their outcome is stored.
// A job id submitted again after the duplicate window is run again, but its
// first outcome is kept.
//
// # Data by reference
//
// Provision also creates the object store buckets, each written by one
// role only, so that a roll-up (which empties a whole bucket, and which
// permissions cannot refuse) by one role empties nothing of another's:
// InputsBucket, for data bigger than a job that producers upload
// (Store.PutInput uploads, Store.SubmitFile uploads a file and submits a
// job whose input refers to it as obj://inputs/...); UploadsBucket, the
// same through the HTTP gateway (Store.PutUpload); OutputsBucket, where
// the controller stores an output that fits the reply but not the result
// record; and, for StoreConfig.OutputAlgorithms, the bucket
// objref.OutputsBucketFor(algorithm) where that algorithm's runners store
// an output bigger than a message, replying with protocol.HeaderOutputRef
// (a reference into any other bucket fails the attempt with 502). Such a
// record carries Result.OutputRef instead of Result.Output; Store.Output
// returns the output either way.
//
// # Stats
//
// A running controller answers requests on StatsSubject
// (pnp.controller.stats, every controller replies) and on
// StatsSubjectOf(instance) (pnp.controller.<instance>.stats) with its Stats
// as JSON: instance, start time, jobs held, and the process's goroutines
// and heap (internal/procstats), e.g.
//
//	nats req pnp.controller.stats '' --replies 0
package controller
