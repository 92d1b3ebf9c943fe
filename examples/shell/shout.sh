#!/usr/bin/env bash
# shout: a worker in plain bash, to show that any executable plugs in
# (docs/WORKER.md). It upper-cases a text. No SDK, no NATS client: print the
# hello, then answer each request line with a result carrying its id.
#
#   pnp runner --algorithms none --worker examples/shell/shout.sh
#   nats req run.shout '{"text":"plug and play"}'     # {"text":"PLUG AND PLAY"}
set -u
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"shout","version":"1.0.0","description":"Upper-cases a text (a worker written in bash).","input_schema":{"type":"object","required":["text"],"additionalProperties":false,"properties":{"text":{"type":"string","pattern":"^[^\"\\\\]*$"}}},"output_schema":{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}},"max_concurrency":1}]}'
while IFS= read -r line; do
	[[ $line =~ \"type\":\"request\" ]] || continue # ignore cancels: answers are instant
	[[ $line =~ \"id\":\"([^\"]*)\" ]] || continue
	id=${BASH_REMATCH[1]}
	# The schema refuses quotes and backslashes, so the text is the
	# characters between the quotes after "text":.
	[[ $line =~ \"text\":\"([^\"]*)\" ]] || { printf '{"type":"error","id":"%s","code":500,"message":"no text"}\n' "$id"; continue; }
	printf '{"type":"result","id":"%s","output":{"text":"%s"}}\n' "$id" "${BASH_REMATCH[1]^^}"
done
