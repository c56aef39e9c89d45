// Package keyspace is the one place that knows logferry's etcd key layout.
//
// Every key lives under an optional root prefix (default none):
//
//	/topics/<P>                  topic directory config (operators)
//	/topics/<P>/<agent>          agent heartbeat for topic P (agent lease)
//	/assign/<agent>/<P>/<file>   assignment of one file to one agent (coordinator)
//	/offsets/<P>/<file>          checkpoint of one file (the assigned agent)
//	/coordinator/election/       concurrency.Election prefix
//	/status/coordinator          leader status (coordinator)
//	/status/topics/<P>           per-topic status (coordinator)
//	/status/agents/<agent>       per-agent problems (agent lease)
//
// Invariants:
//   - Builders never produce a key that Parse would reject or read back
//     differently: Parse(Build(x)) == x for every valid x.
//   - Parse never guesses. A key that does not have exactly one of the shapes
//     above, or whose segments break the naming rules, is an error that
//     quotes the key.
//   - Directory prefixes always end in "/", because an etcd prefix watch on
//     "/topics/t1" would also match "/topics/t10".
//
// Segment rules: a topic name <P> follows Kafka's topic-name rules
// ([A-Za-z0-9._-], 1..249, not "." or ".."); an agent id is 1..253 of
// [A-Za-z0-9._:-] (an IPv4 or IPv6 address or a host name); a file key is
// 1..128 of [A-Za-z0-9._-] (it is derived from the file's identity, never a
// raw path).
package keyspace
