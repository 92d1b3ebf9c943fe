package main

import "runtime/debug"

// releaseStartupMemory returns to the operating system the heap that
// start-up used and no longer needs — compiling every algorithm's schemas,
// indexing the meme gallery, provisioning, storing the demo images — once
// the process serves. The Go runtime would otherwise keep those pages as
// free heap for reuse: an idle process stays at its start-up peak. It
// costs one garbage collection, once; GOGC and GOMEMLIMIT are left as
// they are.
func releaseStartupMemory() { debug.FreeOSMemory() }
