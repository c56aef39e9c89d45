package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/protocol"
)

// Version is the format version of the state file.
const Version = 1

// FileName is the state file's name in its directory.
const FileName = "checkpoints.json"

// Entry is one file's saved checkpoint.
type Entry struct {
	Offset   int64                 `json:"offset"` // just past the last acknowledged line
	Identity protocol.FileIdentity `json:"identity"`
	Path     string                `json:"path"`
	Updated  time.Time             `json:"updated"`
}

type file struct {
	V       int              `json:"v"`
	Agent   string           `json:"agent"`
	Entries map[string]Entry `json:"entries"` // "topic/file key"
}

// Store is the state file of one agent, kept in memory and saved whole.
type Store struct {
	path  string
	agent string

	mu sync.Mutex
	// entries are keyed by the caller's own strings: a "topic/file" key
	// made for each was a megabyte at 10,000 files. The file's keys are
	// made only to save it.
	entries map[ref]Entry
	dirty   bool
	// saving serialises Save: two saves writing at once could rename the
	// older snapshot last.
	saving sync.Mutex
}

// ErrCorrupt marks a state file that cannot be read.
var ErrCorrupt = errors.New("statefile: unreadable state file")

// Open reads dir's state file of agent (none yet is an empty state). The
// directory is created if missing.
func Open(dir, agent string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("statefile: no directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("statefile: create %s: %w", dir, err)
	}
	s := &Store{path: filepath.Join(dir, FileName), agent: agent, entries: map[ref]Entry{}}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("statefile: read %s: %w", s.path, err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrCorrupt, s.path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w %s: data after the value", ErrCorrupt, s.path)
	}
	if f.V != Version {
		return nil, fmt.Errorf("%w %s: version %d, this build reads %d", ErrCorrupt, s.path, f.V, Version)
	}
	if f.Agent != agent {
		// Another agent id's state (the id changed, or the directory is
		// shared by mistake): its offsets say nothing about this agent's
		// files, whose keys carry the id on local topics.
		return s, nil
	}
	for k, e := range f.Entries {
		topic, file, ok := strings.Cut(k, "/")
		if !ok {
			return nil, fmt.Errorf("%w %s: entry %q is not topic/file", ErrCorrupt, s.path, k)
		}
		s.entries[ref{topic, file}] = e
	}
	return s, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return s.path }

// ref is an entry's key: topic and file key.
type ref struct{ topic, file string }

// key is ref's key in the file: topic names have no slash.
func (r ref) key() string { return r.topic + "/" + r.file }

// Get is the saved checkpoint of a file.
func (s *Store) Get(topic, file string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[ref{topic, file}]
	return e, ok
}

// Topic returns the saved checkpoints of topic's files, by file key.
func (s *Store) Topic(topic string) map[string]Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Entry{}
	for r, e := range s.entries {
		if r.topic == topic {
			out[r.file] = e
		}
	}
	return out
}

// Set records a file's checkpoint; Save makes it durable.
func (s *Store) Set(topic, file string, e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := ref{topic, file}
	if old, ok := s.entries[r]; ok && old.Offset == e.Offset && old.Identity == e.Identity && old.Path == e.Path {
		return
	}
	s.entries[r] = e
	s.dirty = true
}

// Delete forgets a file (released to another agent, or taken away).
func (s *Store) Delete(topic, file string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[ref{topic, file}]; ok {
		delete(s.entries, ref{topic, file})
		s.dirty = true
	}
}

// Len is how many files the state holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Save writes the state if it changed since the last save: a temporary
// file, fsync, rename, fsync of the directory.
func (s *Store) Save() error {
	s.saving.Lock()
	defer s.saving.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	f := file{V: Version, Agent: s.agent, Entries: make(map[string]Entry, len(s.entries))}
	for r, e := range s.entries {
		f.Entries[r.key()] = e
	}
	s.dirty = false
	s.mu.Unlock()
	data, err := json.Marshal(&f)
	if err == nil {
		err = writeAtomic(s.path, data)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true // try again next time
		s.mu.Unlock()
		return fmt.Errorf("statefile: save %s: %w", s.path, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
