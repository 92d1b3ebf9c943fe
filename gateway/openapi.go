package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func jsonBody(schema any) obj {
	return obj{"content": obj{"application/json": obj{"schema": schema}}}
}

func problemResponse(desc string) obj {
	return obj{"description": desc, "content": obj{"application/problem+json": obj{"schema": ref("Problem")}}}
}

// errorResponses are the problems a run can answer with: the runner's
// codes, plus 404 when nobody serves the algorithm and 413 for a body over
// the max payload.
func errorResponses() obj {
	return obj{
		"400": problemResponse("invalid input: the violations name each field"),
		"404": problemResponse("no runner serves the algorithm"),
		"413": problemResponse("body over the NATS server's max payload"),
		"415": problemResponse("a body type a web form could send (send application/json)"),
		"422": problemResponse("input rejected by the algorithm"),
		"500": problemResponse("internal error of the algorithm"),
		"502": problemResponse("the runner's output is not JSON or does not satisfy its output schema"),
		"503": problemResponse("runner overloaded or draining"),
		"504": problemResponse("deadline exceeded"),
	}
}

// statusEnum lists the statuses of a result record.
func statusEnum() []any {
	out := make([]any, len(jobs.Statuses))
	for i, s := range jobs.Statuses {
		out[i] = string(s)
	}
	return out
}

// rawSchema keeps a registration's schema as it was published; an
// unparsable one becomes {} (any JSON).
func rawSchema(b json.RawMessage) any {
	if len(b) == 0 || !json.Valid(b) {
		return obj{}
	}
	return b
}

// openAPIDoc builds the OpenAPI 3.1 document of the live algorithms: one
// run and one jobs path per algorithm, with its own input and output
// schemas, and the fixed routes.
func (g *Gateway) openAPIDoc() obj {
	timeoutParam := obj{"name": "Pnp-Timeout", "in": "header", "required": false,
		"description": "time budget of this request, a Go duration such as 500ms; can only shorten the algorithm's timeout",
		"schema":      obj{"type": "string"}}
	traceParam := obj{"name": "traceparent", "in": "header", "required": false,
		"description": "W3C trace context, passed on to the runner", "schema": obj{"type": "string"}}
	paths := obj{
		"/v1/algorithms": obj{"get": obj{
			"operationId": "listAlgorithms", "summary": "live algorithms from discovery: versions, instances, schemas",
			"parameters": []any{obj{"name": "stats", "in": "query", "required": false, "description": "set to include the runners' stats", "schema": obj{"type": "string"}}},
			"responses":  obj{"200": obj{"description": "the algorithms", "content": obj{"application/json": obj{"schema": obj{"type": "array", "items": ref("Algorithm")}}}}},
		}},
		"/v1/jobs": obj{"get": obj{
			"operationId": "listJobs", "summary": "result records, most recently written first, filtered and paged (docs/JOBS.md)",
			"parameters": []any{
				obj{"name": "algorithm", "in": "query", "required": false, "description": "only this algorithm's jobs", "schema": obj{"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}},
				obj{"name": "status", "in": "query", "required": false, "description": "only records with this status", "schema": obj{"enum": statusEnum()}},
				obj{"name": "since", "in": "query", "required": false, "description": "only jobs submitted at or after this RFC 3339 time, or this long ago (a Go duration such as 90m)", "schema": obj{"type": "string"}},
				obj{"name": "limit", "in": "query", "required": false, "description": "page size", "schema": obj{"type": "integer", "minimum": 1, "maximum": jobs.MaxListLimit, "default": jobs.DefaultListLimit}},
				obj{"name": "cursor", "in": "query", "required": false, "description": "the next of the previous page, unchanged", "schema": obj{"type": "string"}},
			},
			"responses": obj{"200": obj{"description": "one page", "content": obj{"application/json": obj{"schema": ref("JobPage")}}},
				"400": problemResponse("a bad parameter: the message names it and says what is wrong"), "503": problemResponse("JetStream unavailable")},
		}},
		"/v1/jobs/{id}": obj{"get": obj{
			"operationId": "getJob", "summary": "a job's result record; with wait, the final one",
			"parameters": []any{
				obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}},
				obj{"name": "wait", "in": "query", "required": false, "description": "wait up to this long (e.g. 30s) for the final record", "schema": obj{"type": "string"}},
			},
			"responses": obj{"200": obj{"description": "the result record", "content": obj{"application/json": obj{"schema": ref("Result")}}},
				"400": problemResponse("invalid job id or wait"), "404": problemResponse("no result: waiting, unknown or expired")},
		}, "delete": obj{
			"operationId": "cancelJob", "summary": "cancel a job: a waiting job never runs, a running one has its context cancelled; never retried",
			"parameters": []any{obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses": obj{"200": obj{"description": "cancelled: the job's cancelled record", "content": obj{"application/json": obj{"schema": ref("Result")}}},
				"400": problemResponse("invalid job id"), "404": problemResponse("no such job: no record and nothing waiting under this id"),
				"409": problemResponse("the job already finished; job_status names its outcome"), "503": problemResponse("JetStream unavailable")},
		}},
		"/v1/jobs/{id}/output": obj{"get": obj{
			"operationId": "getJobOutput", "summary": "a succeeded job's output, from its record or from the object its output_ref names",
			"parameters": []any{obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses": obj{"200": obj{"description": "the output JSON", "content": obj{"application/json": obj{"schema": obj{}}}},
				"404": problemResponse("no result"), "409": problemResponse("the job has not succeeded")},
		}},
		"/v1/objects": obj{"post": obj{
			"operationId": "uploadObject", "summary": "upload the body to bucket uploads; reference it as obj://uploads/<name> in an input",
			"parameters":  []any{obj{"name": "filename", "in": "query", "required": false, "description": "kept at the end of the object's unique name", "schema": obj{"type": "string"}}},
			"requestBody": obj{"required": true, "content": obj{"application/octet-stream": obj{"schema": obj{"type": "string", "format": "binary"}}}},
			"responses": obj{"201": obj{"description": "stored", "headers": obj{"Location": obj{"schema": obj{"type": "string"}}},
				"content": obj{"application/json": obj{"schema": ref("Object")}}}, "413": problemResponse("over the upload limit")},
		}},
		"/v1/objects/{bucket}/{name}": obj{"get": obj{
			"operationId": "downloadObject", "summary": "an object of bucket inputs, uploads, outputs or outputs_<algorithm>",
			"parameters": []any{obj{"name": "bucket", "in": "path", "required": true, "schema": obj{"type": "string", "pattern": "^(inputs|uploads|outputs|outputs_[a-z][a-z0-9_]{0,63})$"}},
				obj{"name": "name", "in": "path", "required": true, "description": "the object's name; may contain '/'", "schema": obj{"type": "string"}}},
			"responses": obj{"200": obj{"description": "the object's bytes", "content": obj{"application/octet-stream": obj{"schema": obj{"type": "string", "format": "binary"}}}},
				"404": problemResponse("no such object, or not a bucket of the pipeline")},
		}},
		"/v1/dead": obj{"get": obj{
			"operationId": "listDeadLetters", "summary": "dead letters: jobs that failed for good, with the reason",
			"parameters": []any{obj{"name": "algorithm", "in": "query", "required": false, "schema": obj{"type": "string"}}},
			"responses":  obj{"200": obj{"description": "the dead letters, oldest first", "content": obj{"application/json": obj{"schema": obj{"type": "array", "items": ref("DeadLetter")}}}}},
		}},
		"/v1/dead/{id}/replay": obj{"post": obj{
			"operationId": "replayDeadLetter", "summary": "submit a dead letter again under its job id",
			"parameters": []any{obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses": obj{"202": obj{"description": "replayed", "content": obj{"application/json": obj{"schema": ref("JobAccepted")}}},
				"404": problemResponse("no dead letter for this job"), "409": problemResponse("already succeeded, or not replayable")},
		}},
		"/v1/queues": obj{"get": obj{
			"operationId": "listQueues", "summary": "waiting, in flight and dead jobs per algorithm",
			"responses": obj{"200": obj{"description": "the queues", "content": obj{"application/json": obj{"schema": obj{"type": "array", "items": ref("Queue")}}}}},
		}},
		"/v1/schedules": obj{
			"get": obj{
				"operationId": "listSchedules", "summary": "the periodic jobs, by name, with their next run",
				"responses": obj{"200": obj{"description": "the schedules", "content": obj{"application/json": obj{"schema": obj{"type": "array", "items": ref("Schedule")}}}},
					"503": problemResponse("JetStream unavailable")},
			},
			"post": obj{
				"operationId": "addSchedule", "summary": "store a periodic job (every or cron); one of the same name is replaced. Each run is a job <name>-<time>",
				"requestBody": jsonBody(ref("ScheduleRequest")),
				"responses": obj{"201": obj{"description": "stored", "headers": obj{"Location": obj{"schema": obj{"type": "string"}}},
					"content": obj{"application/json": obj{"schema": ref("Schedule")}}},
					"400": problemResponse("invalid schedule: the message names each bad field"), "413": problemResponse("input too large"),
					"503": problemResponse("JetStream unavailable, or stream SCHEDULES not provisioned")},
			},
		},
		"/v1/schedules/{name}": obj{"delete": obj{
			"operationId": "removeSchedule", "summary": "remove a periodic job; runs already fired go on",
			"parameters": []any{obj{"name": "name", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses":  obj{"204": obj{"description": "removed"}, "404": problemResponse("no such schedule")},
		}},
		"/v1/routes": obj{"get": obj{
			"operationId": "listRoutes", "summary": "the routes: which version serves plain traffic, canary and shadow (docs/ROLLOUT.md)",
			"responses": obj{"200": obj{"description": "every route, by algorithm", "content": obj{"application/json": obj{"schema": obj{"type": "array", "items": ref("Route")}}}}},
		}},
		"/v1/algorithms/{name}/comparisons": obj{"get": obj{
			"operationId": "shadowReport", "summary": "the report of an algorithm's last shadow comparisons: agreement, fields that differ, errors and latency per version",
			"parameters": []any{obj{"name": "name", "in": "path", "required": true, "schema": obj{"type": "string"}},
				obj{"name": "last", "in": "query", "required": false, "description": "the newest N comparisons (default 500, at most 10000)", "schema": obj{"type": "integer", "minimum": 1, "maximum": 10000}},
				obj{"name": "candidate", "in": "query", "required": false, "description": "only those of this candidate version, among the newest N", "schema": obj{"type": "string"}}},
			"responses": obj{"200": obj{"description": "the report (reused for 2 s)", "content": obj{"application/json": obj{"schema": ref("Report")}}},
				"400": problemResponse("last out of range"), "404": problemResponse("not an algorithm name"), "503": problemResponse("JetStream unavailable")},
		}},
		"/v1/events": obj{"get": obj{
			"operationId": "events", "summary": "Server-Sent Events: registered, departed, job",
			"responses": obj{"200": obj{"description": "an event stream; the data of a job event is a JobEvent (with progress while the job runs and reports it)",
				"content": obj{"text/event-stream": obj{"schema": obj{"type": "string"}, "x-event-schemas": obj{"job": ref("JobEvent")}}}}},
		}},
		"/healthz": obj{"get": obj{"operationId": "healthz", "summary": "the process is up", "security": []any{}, "responses": obj{"200": obj{"description": "ok"}}}},
		"/readyz": obj{"get": obj{"operationId": "readyz", "summary": "NATS connected and discovery readable", "security": []any{},
			"responses": obj{"200": obj{"description": "ready"}, "503": problemResponse("not ready")}}},
	}
	fileForm := obj{"schema": obj{"type": "object", "required": []any{"file"}, "properties": obj{
		"file":  obj{"type": "string", "format": "binary", "description": "uploaded to bucket uploads; its obj:// reference becomes the input field named by field"},
		"field": obj{"type": "string", "default": DefaultFileField, "description": "the input field that takes the file's reference"},
		"input": obj{"type": "string", "description": "the other input fields, a JSON object"},
	}}}
	for _, a := range g.algorithms() {
		in, out := rawSchema(a.InputSchema), rawSchema(a.OutputSchema)
		run := obj{
			"operationId": "run_" + a.Name,
			"summary":     a.Name + " " + a.Version + ": run and wait for the output",
			"description": a.Description,
			"tags":        []any{a.Name},
			"parameters":  []any{timeoutParam, traceParam},
			"requestBody": obj{"required": true, "content": obj{"application/json": obj{"schema": in}, "multipart/form-data": fileForm}},
			"responses":   obj{"200": obj{"description": "the algorithm's output", "content": obj{"application/json": obj{"schema": out}}}},
		}
		for code, resp := range errorResponses() {
			run["responses"].(obj)[code] = resp
		}
		jobs := obj{
			"operationId": "submit_" + a.Name,
			"summary":     a.Name + ": submit a durable job",
			"tags":        []any{a.Name},
			"parameters": []any{timeoutParam, traceParam,
				obj{"name": "Idempotency-Key", "in": "header", "required": false, "description": "the job id; a job submitted twice within the duplicate window is stored once", "schema": obj{"type": "string"}},
				obj{"name": "Pnp-Priority", "in": "header", "required": false, "description": "high, normal (default) or low: waiting high jobs go first, 7 of every 10 dispatches while all wait (2 normal, 1 low)", "schema": obj{"type": "string", "enum": []any{"high", "normal", "low"}}},
				obj{"name": "Pnp-Not-Before", "in": "header", "required": false, "description": "delay the job until this RFC 3339 time (rounded up to the second); until then GET /v1/jobs/{id} answers status scheduled", "schema": obj{"type": "string", "format": "date-time"}}},
			"requestBody": obj{"required": true, "content": obj{"application/json": obj{"schema": in}, "multipart/form-data": fileForm}},
			"responses": obj{
				"202": obj{"description": "stored; read the result at Location", "headers": obj{"Location": obj{"schema": obj{"type": "string"}}},
					"content": obj{"application/json": obj{"schema": ref("JobAccepted")}}},
				"400": problemResponse("not JSON, or an invalid Idempotency-Key, Pnp-Priority or Pnp-Not-Before"),
				"404": problemResponse("unknown algorithm: never registered nor declared; suggestions names the closest known ones"),
				"413": problemResponse("job too large"),
			},
		}
		paths["/v1/algorithms/"+a.Name+"/run"] = obj{"post": run}
		paths["/v1/algorithms/"+a.Name+"/jobs"] = obj{"post": jobs}
	}
	str := obj{"type": "string"}
	integer := obj{"type": "integer"}
	dateTime := obj{"type": "string", "format": "date-time"}
	doc := obj{
		"openapi": "3.1.0",
		"info": obj{"title": "pnpworker gateway", "version": "1",
			"description": "Run the algorithms served over NATS by pnpworker. Generated from the live discovery records: each algorithm has its own run and jobs paths with its input and output schemas."},
		"paths": paths,
		"components": obj{"schemas": obj{
			"Problem": obj{"type": "object", "required": []any{"type", "title", "status", "code", "message"}, "properties": obj{
				"type": str, "title": str, "status": integer, "detail": str, "code": integer, "message": str, "algorithm": str, "instance": str,
				"violations":  obj{"type": "array", "items": obj{"type": "object", "properties": obj{"pointer": str, "message": str}}},
				"suggestions": obj{"type": "array", "items": str, "description": "known algorithm names closest to an unknown one"},
				"job_status":  obj{"type": "string", "description": "the outcome of a job that could not be cancelled"},
			}},
			"Object":      obj{"type": "object", "required": []any{"ref", "bucket", "name", "size"}, "properties": obj{"ref": str, "bucket": str, "name": str, "size": integer}},
			"JobAccepted": obj{"type": "object", "required": []any{"job_id", "location"}, "properties": obj{"job_id": str, "duplicate": obj{"type": "boolean"}, "location": str, "not_before": dateTime}},
			"Result": obj{"type": "object", "description": "a result record (schemas/result.json)", "required": []any{"job_id", "algorithm", "status"}, "properties": obj{"job_id": str, "algorithm": str, "status": obj{"enum": append(statusEnum(), string(jobs.StatusScheduled))}, "output": obj{}, "output_ref": str, "error": obj{"type": "object"}, "attempts": integer,
				"instance": str, "version": str, "submitted_at": str, "started_at": str, "finished_at": str, "duration_ms": obj{"type": "number"},
				"input": obj{"description": "the job's input, when at most 1024 bytes"}, "input_bytes": integer, "trace_id": str, "not_before": dateTime,
				"progress": ref("Progress")}},
			"Progress": obj{"type": "object", "description": "how far a running job got, as its runner last reported it (status running)", "required": []any{"fraction", "updated_at"},
				"properties": obj{"fraction": obj{"type": "number", "minimum": 0, "maximum": 1}, "message": obj{"type": "string", "maxLength": protocol.MaxProgressMessage}, "updated_at": dateTime}},
			"JobEvent": obj{"type": "object", "description": "the data of a job event of /v1/events: a job's record changed", "required": []any{"job_id", "algorithm", "status", "attempts"},
				"properties": obj{"job_id": str, "algorithm": str, "status": obj{"enum": statusEnum()}, "attempts": integer, "error": obj{"type": "object"},
					"duration_ms": obj{"type": "number"}, "progress": ref("Progress")}},
			"JobPage": obj{"type": "object", "required": []any{"jobs", "scanned"}, "properties": obj{
				"jobs": obj{"type": "array", "items": ref("Result"), "description": "records without their output and input"},
				"next": obj{"type": "string", "description": "cursor of the next page; absent on the last"}, "scanned": integer}},
			"ScheduleRequest": obj{"type": "object", "required": []any{"name", "algorithm", "input"}, "additionalProperties": false,
				"description": "give every or cron",
				"properties": obj{"name": obj{"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"}, "algorithm": str,
					"every":    obj{"type": "string", "description": "interval, a Go duration of whole seconds, at least 1s"},
					"cron":     obj{"type": "string", "description": "six fields, seconds first, in UTC, or @hourly, @daily, @weekly, @monthly, @yearly"},
					"input":    obj{"description": "the input of each run"},
					"timeout":  obj{"type": "string", "description": "each run's time budget, a Go duration"},
					"priority": obj{"type": "string", "enum": []any{"high", "normal", "low"}, "description": "each run's priority (Pnp-Priority)"}}},
			"Schedule": obj{"type": "object", "required": []any{"name", "algorithm", "input", "created", "next_run"},
				"properties": obj{"name": str, "algorithm": str, "every": str, "cron": str, "input": obj{}, "timeout": str, "priority": str, "created": dateTime, "next_run": dateTime}},
			"DeadLetter": obj{"type": "object", "properties": obj{"seq": integer, "job_id": str, "algorithm": str, "code": integer, "reason": str, "attempts": integer, "dead_at": str, "body": obj{}}},
			"Queue":      obj{"type": "object", "properties": obj{"algorithm": str, "waiting": integer, "in_flight": integer, "dead": integer, "runners": integer}},
			"Route": obj{"type": "object", "description": "a route (schemas/route.json, docs/ROLLOUT.md)", "required": []any{"algorithm", "stable"},
				"properties": obj{"algorithm": str, "stable": str, "canary": str, "percent": obj{"type": "number"}, "shadow": str, "updated_at": str, "updated_by": str}},
			"Report": obj{"type": "object", "description": "agreement of a candidate with the stable version, as pnp route report prints it", "properties": obj{
				"algorithm": str, "total": integer, "agree": integer, "agreement": obj{"type": "number"}, "not_compared": integer, "not_compared_reason": str,
				"fields":   obj{"type": "array", "items": obj{"type": "object", "properties": obj{"pointer": str, "count": integer, "example_job_ids": obj{"type": "array", "items": str}}}},
				"versions": obj{"type": "array", "items": obj{"type": "object", "properties": obj{"version": str, "runs": integer, "errors": integer, "error_rate": obj{"type": "number"}, "p50_ms": obj{"type": "number"}, "p99_ms": obj{"type": "number"}}}},
			}},
			"Algorithm": obj{"type": "object", "properties": obj{"name": str, "version": str, "versions": obj{"type": "array", "items": str}, "input_schema": obj{}, "output_schema": obj{}, "instances": obj{"type": "array", "items": obj{"type": "object"}}}},
		}},
	}
	if g.cfg.Token != "" {
		doc["components"].(obj)["securitySchemes"] = obj{"bearer": obj{"type": "http", "scheme": "bearer"}}
		doc["security"] = []any{obj{"bearer": []any{}}}
	}
	return doc
}

func (g *Gateway) openAPI(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, g.openAPIDoc())
}
