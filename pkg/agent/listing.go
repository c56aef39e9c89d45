package agent

import (
	"maps"

	"github.com/logferry/logferry/pkg/protocol"
)

// listing is what one topic lists on this host (its heartbeat's files):
// the files its last scan found, and the extra files listed without the
// scan finding them (a run's file rotated out of the globs, an unfinished
// rotated file, a file the directory watcher found since the scan). It is
// never modified once stored in the inventory: the snapshots and the last
// heartbeat share its maps, so a change makes a new listing.
type listing struct {
	files map[string]protocol.SeenFile // every listed file, by key
	extra map[string]protocol.SeenFile // those of files the scan did not find
}

// listBuilder makes a topic's listing in a scan: the scanner's files, then
// the extra files. A scan of quiet files finds what the last one found,
// and then the last listing's map is kept rather than copied: at 10,000
// files a copy a scan was most of what an idle agent allocated.
type listBuilder struct {
	prev *listing
	// found are the scan's files: prev.files when same (then prev.extra
	// are not among them), else a map of their own.
	found map[string]protocol.SeenFile
	same  bool
	extra map[string]protocol.SeenFile // added in this scan
}

// buildListing starts the listing of a topic whose scan found scanned,
// after prev (nil: none).
func buildListing(prev *listing, scanned []protocol.SeenFile) listBuilder {
	b := listBuilder{prev: prev}
	// The scan found what prev's scan found if it found as many files,
	// each one as prev's scan found it: the scanner reports a path once
	// (checked: its files are sorted by path), and an equal entry has the
	// same path, so no key comes twice.
	if prev != nil && len(scanned) == len(prev.files)-len(prev.extra) {
		b.same = true
		for i, f := range scanned {
			if i > 0 && scanned[i-1].Path == f.Path {
				b.same = false
				break
			}
			if g, ok := prev.files[f.Key]; !ok || g != f {
				b.same = false
				break
			}
			if _, extra := prev.extra[f.Key]; extra {
				b.same = false
				break
			}
		}
	}
	if b.same {
		b.found = prev.files
		return b
	}
	b.found = make(map[string]protocol.SeenFile, len(scanned))
	for _, f := range scanned {
		b.found[f.Key] = f
	}
	return b
}

// get returns the file listed under key so far.
func (b *listBuilder) get(key string) (protocol.SeenFile, bool) {
	if f, ok := b.extra[key]; ok {
		return f, true
	}
	if b.same {
		if _, extra := b.prev.extra[key]; extra {
			return protocol.SeenFile{}, false
		}
	}
	f, ok := b.found[key]
	return f, ok
}

// add lists f, which the scan did not find.
func (b *listBuilder) add(f protocol.SeenFile) {
	if b.extra == nil {
		b.extra = map[string]protocol.SeenFile{}
	}
	b.extra[f.Key] = f
}

// listing returns the listing made, and whether it is prev, unchanged.
func (b *listBuilder) listing() (_ *listing, unchanged bool) {
	if b.same && maps.Equal(b.extra, b.prev.extra) {
		return b.prev, true
	}
	files := b.found
	if b.same { // prev's map is prev's: copy what the scan found
		files = make(map[string]protocol.SeenFile, len(b.found)-len(b.prev.extra)+len(b.extra))
		for key, f := range b.found {
			if _, extra := b.prev.extra[key]; !extra {
				files[key] = f
			}
		}
	}
	for key, f := range b.extra {
		files[key] = f
	}
	return &listing{files: files, extra: b.extra}, false
}

// with is l (nil: empty) with fs added as extra files, in a new listing.
func (l *listing) with(fs []protocol.SeenFile) *listing {
	out := &listing{files: map[string]protocol.SeenFile{}, extra: map[string]protocol.SeenFile{}}
	if l != nil {
		maps.Copy(out.files, l.files)
		maps.Copy(out.extra, l.extra)
	}
	for _, f := range fs {
		out.files[f.Key] = f
		out.extra[f.Key] = f
	}
	return out
}
