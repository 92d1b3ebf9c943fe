//go:build !race

package replycheck

const raceEnabled = false
