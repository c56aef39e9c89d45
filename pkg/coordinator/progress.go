package coordinator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusTimeout bounds the members' status requests at a term's start.
const statusTimeout = 2 * time.Second

// versionCheck remembers the last answer of progressInOrder, for a term
// that starts while no member answers (an overloaded etcd is when leaders
// flip): falling back to a list then would cost the most.
type versionCheck struct {
	mu    sync.Mutex
	known bool
	ok    bool
	why   string
}

// progressInOrder reports whether a new term may trust etcd's progress
// notifications to say its State is current (see term.catchUp): every
// member that answers a status request runs a release that sends a
// requested progress notification in order with the watch's events
// (etcdProgressInOrder). The members are asked at once, within
// statusTimeout; if none answers, the last answer stands, and without
// one it reports false (the term lists).
func (c *Coordinator) progressInOrder(ctx context.Context) (bool, string) {
	cli := c.cfg.Client
	eps := cli.Endpoints()
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	versions := make([]string, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			st, err := cli.Status(sctx, ep)
			if err != nil {
				c.log.Debug("etcd member did not answer a status request", "endpoint", ep, "err", err)
				return
			}
			versions[i] = st.Version
		})
	}
	wg.Wait()
	ok, why, answered := true, "", false
	for i, v := range versions {
		if v == "" {
			continue
		}
		answered = true
		if !etcdProgressInOrder(v) {
			ok, why = false, fmt.Sprintf("etcd %s at %s sends requested progress notifications out of order with events (fixed in 3.4.25 and 3.5.8)", v, eps[i])
			break
		}
	}
	vc := &c.versions
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if answered {
		vc.known, vc.ok, vc.why = true, ok, why
		return ok, why
	}
	if vc.known {
		return vc.ok, vc.why
	}
	return false, "no etcd member answered a status request"
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
