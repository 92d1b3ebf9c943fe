package jobs

// DecodeResult parses a record of the results bucket stored under key: the
// checks of Result, for readers that watch the bucket themselves. A record
// that is not JSON, or whose job_id is not key, fails with
// ErrCorruptResult and must never be taken for that job's result.
func DecodeResult(key string, data []byte) (Result, error) { return decodeResult(key, data) }
