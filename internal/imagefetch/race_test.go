//go:build race

package imagefetch

// raceEnabled is true when the race detector instruments the tests:
// building multi-megapixel pictures then takes minutes.
const raceEnabled = true
