#!/bin/sh
# After an install or an upgrade of logferry-agent: create the service's user
# (sysusers.d), make systemd read the unit again, and restart the service if
# it runs (an upgrade: one host at a time is the rolling upgrade the docs
# describe). A fresh install is not started: /etc/default/logagent needs the
# cluster's addresses first.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers logferry-agent.conf
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl try-restart logagent.service || true
fi
