#!/bin/sh
# Before logferry-coordinator is removed (not upgraded): stop and disable the service.
# dpkg passes "remove", rpm 0 when the last version goes.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now coordinator.service || true
	fi
	;;
esac
