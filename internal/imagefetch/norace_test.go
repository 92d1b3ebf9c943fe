//go:build !race

package imagefetch

const raceEnabled = false
