// Package topics is the topic directory model: the config operators write
// under /topics/<P>, its strict decoding and validation, and a store over
// etcd to put, get, list, delete and watch configs.
//
// Invariants:
//   - Decoding is strict: unknown fields, wrong types and trailing data are
//     errors, and every error names the field (a *FieldError) and quotes the
//     bad value. Validation reports every bad field at once, not the first.
//   - A validated Config has every default filled in explicitly, so its
//     encoding is the full configuration the agents act on, and decoding that
//     encoding gives the same Config back.
//   - Store.Put never writes a config that Decode would reject. Configs
//     written by other means (plain etcdctl) may be invalid: List and Watch
//     hand them over with their error rather than dropping them, so the
//     coordinator can report them.
//   - The watch delivers a snapshot first, then every change once, and
//     survives compaction or a broken stream by re-listing (pkg/mirror): a
//     topic deleted while the watch was broken is reported as deleted.
//   - Only /topics/<P> keys are configs; heartbeats /topics/<P>/<agent> share
//     the prefix and are skipped here.
package topics
