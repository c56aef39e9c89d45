// Package deploy holds no code. Its directory holds what deploying logferry
// takes: systemd units, sysusers.d and /etc/default files (systemd/), the
// package definitions (nfpm/, built by `make package`), a Grafana dashboard
// (grafana/) and Prometheus alert rules (prometheus/).
//
// Its tests check those files against the code: the packages install the
// units, binaries and settings where the units expect them, the dashboard
// and the alerts name only metrics the binaries export, and promtool
// accepts the rules. Tests that need a tool (dpkg, promtool) skip, saying
// so, where it is not installed.
package deploy
