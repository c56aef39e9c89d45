package coordinator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// statusTimeout bounds one member's status request at a term's start.
const statusTimeout = 2 * time.Second

// progressInOrder reports whether a new term may trust etcd's progress
// notifications to say its State is current (see term.catchUp): every
// member that answers a status request runs a release that sends a
// requested progress notification in order with the watch's events
// (etcdProgressInOrder). If none answers, it reports false, and the
// term lists.
func (c *Coordinator) progressInOrder(ctx context.Context) (bool, string) {
	cli := c.cfg.Client
	answered := 0
	for _, ep := range cli.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, statusTimeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			c.log.Debug("etcd member did not answer a status request", "endpoint", ep, "err", err)
			continue
		}
		answered++
		if !etcdProgressInOrder(st.Version) {
			return false, fmt.Sprintf("etcd %s at %s sends requested progress notifications out of order with events (fixed in 3.4.25 and 3.5.8)", st.Version, ep)
		}
	}
	if answered == 0 {
		return false, "no etcd member answered a status request"
	}
	return true, ""
}

// etcdProgressInOrder reports whether etcd version v sends a requested
// progress notification through the watch stream, after every event
// below its revision: 3.4.25 and later 3.4 releases, 3.5.8 and later, 3.6
// and later. Before, it could overtake events still to be sent (etcd
// issue 15220), so a watcher could believe itself current while it was
// not. An unparsable version counts as too old.
func etcdProgressInOrder(v string) bool {
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return false
		}
		n[i] = x
	}
	switch major, minor, patch := n[0], n[1], n[2]; {
	case major != 3:
		return major > 3
	case minor == 4:
		return patch >= 25
	case minor == 5:
		return patch >= 8
	default:
		return minor > 5
	}
}
