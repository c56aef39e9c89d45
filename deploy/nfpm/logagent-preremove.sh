#!/bin/sh
# Before logferry-agent is removed (not upgraded): stop and disable the service.
# dpkg passes "remove", rpm 0 when the last version goes.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now logagent.service || true
	fi
	;;
esac
