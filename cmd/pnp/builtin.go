package main

import (
	"fmt"
	"sort"
	"strings"

	languagedetection "pnpworker/algo/language_detection"
	"pnpworker/runner"
)

// builtins lists every algorithm this binary can serve. Adding an algorithm
// to the binary is one line here.
func builtins() []func() (*runner.Algorithm, error) {
	return []func() (*runner.Algorithm, error){
		languagedetection.New,
	}
}

// selectAlgorithms builds the built-in algorithms named in list (comma
// separated), or all of them when list is empty or "all".
func selectAlgorithms(list string) ([]*runner.Algorithm, error) {
	var all []*runner.Algorithm
	for _, newAlg := range builtins() {
		a, err := newAlg()
		if err != nil {
			return nil, err
		}
		all = append(all, a)
	}
	if list == "" || list == "all" {
		return all, nil
	}
	byName := map[string]*runner.Algorithm{}
	var names []string
	for _, a := range all {
		byName[a.Name()] = a
		names = append(names, a.Name())
	}
	sort.Strings(names)
	var out []*runner.Algorithm
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		a, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("%w: unknown algorithm %q (built in: %s)", errUsage, n, strings.Join(names, ", "))
		}
		seen[n] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --algorithms names no algorithm", errUsage)
	}
	return out, nil
}
