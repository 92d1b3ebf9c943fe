#!/usr/bin/env bash
# A worker written in bash that speaks the protocol by hand. On input
# {"mode":"garbage"} it answers with a line that is not JSON; on "noise" it
# prints a line that is not JSON and names no request, then answers.
set -u
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"rogue","version":"1.0.0","input_schema":{"type":"object","properties":{"mode":{"type":"string"}}},"output_schema":{"type":"object"},"max_concurrency":4}]}'
while IFS= read -r line; do
	[[ $line =~ \"type\":\"request\" ]] || continue
	[[ $line =~ \"id\":\"([^\"]*)\" ]] || continue
	id=${BASH_REMATCH[1]}
	mode=""
	[[ $line =~ \"mode\":\"([^\"]*)\" ]] && mode=${BASH_REMATCH[1]}
	case $mode in
	garbage) echo "{\"type\":\"result\",\"id\":\"$id\",\"output\": this is not json" ;;
	noise)
		echo "some noise that names no request"
		echo "{\"type\":\"result\",\"id\":\"$id\",\"output\":{\"mode\":\"noise\"}}"
		;;
	*) echo "{\"type\":\"result\",\"id\":\"$id\",\"output\":{\"mode\":\"$mode\",\"pid\":$$}}" ;;
	esac
done
