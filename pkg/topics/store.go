package topics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
)

// ErrNotFound is returned for a topic that has no config.
var ErrNotFound = errors.New("topics: no such topic")

// Entry is one stored topic config. Err is set, and Config is zero, when
// the stored value does not decode or validate.
type Entry struct {
	Name        string
	Config      Config
	Err         error
	Raw         []byte
	ModRevision int64
}

// Store reads and writes topic configs in etcd.
type Store struct {
	kv clientv3.KV
	cl *clientv3.Client
	ks keyspace.Space
}

// NewStore returns a store over cli under the key space ks.
func NewStore(cli *clientv3.Client, ks keyspace.Space) *Store {
	return &Store{kv: cli, cl: cli, ks: ks}
}

// Put validates cfg (filling defaults) and writes it as topic name.
func (s *Store) Put(ctx context.Context, name string, cfg Config) (Config, error) {
	if err := cfg.Validate(name); err != nil {
		return Config{}, err
	}
	data, err := cfg.Encode()
	if err != nil {
		return Config{}, fmt.Errorf("encode topic %s: %w", name, err)
	}
	if _, err := s.kv.Put(ctx, s.ks.Topic(name), string(data)); err != nil {
		return Config{}, fmt.Errorf("put topic %s: %w", name, err)
	}
	return cfg, nil
}

// Get reads topic name. A stored value that does not decode is an error
// wrapping ErrInvalid.
func (s *Store) Get(ctx context.Context, name string) (Entry, error) {
	if err := keyspace.ValidateTopic(name); err != nil {
		return Entry{}, err
	}
	resp, err := s.kv.Get(ctx, s.ks.Topic(name))
	if err != nil {
		return Entry{}, fmt.Errorf("get topic %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	e := decodeEntry(name, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	return e, e.Err
}

// List reads every topic config, sorted by name, valid or not. Heartbeat
// keys are skipped; keys under /topics/ that are neither configs nor
// heartbeats are returned in junk.
func (s *Store) List(ctx context.Context) (entries []Entry, junk []string, err error) {
	resp, err := s.kv.Get(ctx, s.ks.TopicsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("list topics: %w", err)
	}
	for _, kv := range resp.Kvs {
		k, err := s.ks.Parse(string(kv.Key))
		switch {
		case err != nil:
			junk = append(junk, string(kv.Key))
		case k.Kind == keyspace.KindTopic:
			entries = append(entries, decodeEntry(k.Topic, kv.Value, kv.ModRevision))
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return entries, junk, nil
}

// Delete removes topic name's config. Heartbeats under it are left to
// their leases. Deleting a missing topic returns ErrNotFound.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := keyspace.ValidateTopic(name); err != nil {
		return err
	}
	resp, err := s.kv.Delete(ctx, s.ks.Topic(name))
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return nil
}

func decodeEntry(name string, raw []byte, rev int64) Entry {
	cfg, err := Decode(name, raw)
	return Entry{Name: name, Config: cfg, Err: err, Raw: raw, ModRevision: rev}
}

// EventType says what happened to a topic.
type EventType int

// The event types.
const (
	Snapshot EventType = iota + 1 // Entries holds every topic
	Changed                       // Entry was created or changed
	Deleted                       // the topic Name is gone
	Junk                          // Key under /topics/ is neither a config nor a heartbeat
)

// Event is one delivery of the watch.
type Event struct {
	Type     EventType
	Revision int64
	Entries  []Entry // Snapshot
	Entry    Entry   // Changed
	Name     string  // Changed, Deleted
	// Key is the unparsable key (Junk); Snapshot lists them in JunkKeys.
	Key      string
	JunkKeys []string
}

// Watch delivers a snapshot of every topic, then each change, to handle,
// until ctx is done (nil) or handle fails (its error). It re-lists by itself
// after compaction or a broken watch; a change is never lost or repeated.
func (s *Store) Watch(ctx context.Context, log *slog.Logger, handle func(Event) error) error {
	// Heartbeats share the prefix with the configs; keeping them would make
	// every agent hold every other agent's (a fleet's worth of values).
	keep := func(key string) bool {
		k, err := s.ks.Parse(key)
		return err != nil || k.Kind == keyspace.KindTopic // configs, and junk to report
	}
	m, err := mirror.New(s.cl, []string{s.ks.TopicsPrefix()}, mirror.WithLogger(log), mirror.WithKeep(keep))
	if err != nil {
		return err
	}
	return m.Run(ctx, func(b mirror.Batch) error {
		if b.Snapshot {
			ev := Event{Type: Snapshot, Revision: b.Revision}
			for _, e := range b.Events {
				k, err := s.ks.Parse(e.KV.Key)
				switch {
				case err != nil:
					ev.JunkKeys = append(ev.JunkKeys, e.KV.Key)
				case k.Kind == keyspace.KindTopic:
					ev.Entries = append(ev.Entries, decodeEntry(k.Topic, e.KV.Value, e.KV.ModRevision))
				}
			}
			return handle(ev)
		}
		for _, e := range b.Events {
			k, err := s.ks.Parse(e.KV.Key)
			if err != nil {
				if e.Type == mirror.Put {
					if err := handle(Event{Type: Junk, Revision: b.Revision, Key: e.KV.Key}); err != nil {
						return err
					}
				}
				continue
			}
			if k.Kind != keyspace.KindTopic {
				continue
			}
			ev := Event{Type: Deleted, Revision: b.Revision, Name: k.Topic}
			if e.Type == mirror.Put {
				ev.Type = Changed
				ev.Entry = decodeEntry(k.Topic, e.KV.Value, e.KV.ModRevision)
			}
			if err := handle(ev); err != nil {
				return err
			}
		}
		return nil
	})
}
