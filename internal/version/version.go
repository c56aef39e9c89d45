// Package version holds build information stamped by the Makefile through
// -ldflags "-X github.com/logferry/logferry/internal/version.Version=...".
package version

import "fmt"

// Stamped at build time; the defaults mark an unstamped (go run) build.
var (
	Version = "dev"
	Commit  = "none"
	Date    = "unknown"
)

// String is the one-line version banner every binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s)", binary, Version, Commit, Date)
}
