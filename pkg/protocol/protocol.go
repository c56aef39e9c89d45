package protocol

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the format version written into every value. It changes only
// for an incompatible change, one that a reader of the previous format would
// misread (a field removed, renamed, or given a new meaning or type); adding
// a field never changes it, since readers ignore fields they do not know.
// See doc.go for the whole rule.
const Version = 1

// ErrVersion is returned for a value of a format version this build does not
// read: written by a build that changed the format incompatibly, or by no
// logferry build at all (v missing or below 1).
var ErrVersion = errors.New("protocol: unknown value version")

// FileIdentity is what makes a file the same file across renames: the
// fingerprint of its first bytes and its inode (and device, for files on a
// local disk).
type FileIdentity struct {
	Fingerprint string `json:"fingerprint"` // hex SHA-256 of the first FingerprintBytes bytes (Bytes, if Partial)
	Inode       uint64 `json:"inode"`
	Device      uint64 `json:"device,omitempty"`
	// Partial marks a file identified while shorter than the fingerprint
	// length: Fingerprint covers its first Bytes bytes only (0 for a file
	// identified empty), and it keeps that identity, matched by prefix, as
	// it grows.
	Partial bool `json:"partial,omitempty"`
	Bytes   int  `json:"bytes,omitempty"`
	// Birth is the file's birth time (statx), in Unix nanoseconds, on a
	// local topic's partial identity where the file system records it: a
	// reused inode whose first bytes happen to match is then still another
	// file.
	Birth int64 `json:"birth,omitempty"`
	// Found is when an agent identified a local topic's short file (Unix
	// nanoseconds): a file truncated and written again keeps its inode and
	// birth time, and may start with the same few bytes, yet is another
	// file with another key. Nothing computes a partial identity again
	// (agents remember them), so the key need not be reproducible.
	Found int64 `json:"found,omitempty"`
}

// SeenFile is one file an agent reports for a topic. In a heartbeat only
// Key and Path are set: the coordinator needs nothing else, and the
// agent's own uses (Size, Identity) stay in the agent. Left out, they cost
// nothing: an entry is about 50 bytes plus its path (see MarshalHeartbeat
// for heartbeats beyond MaxHeartbeatBytes).
type SeenFile struct {
	Key      string       `json:"key"`
	Path     string       `json:"path"`
	Size     int64        `json:"size,omitempty"`
	Identity FileIdentity `json:"identity,omitzero"`
}

// Heartbeat is the value of /topics/<P>/<agent>.
type Heartbeat struct {
	V       int        `json:"v"`
	Agent   string     `json:"agent"`
	Version string     `json:"version"` // the agent's build version
	Started time.Time  `json:"started"`
	Files   []SeenFile `json:"files"`
	// FilesZ, when set, holds more files: the JSON array of them, gzipped
	// (base64 in the JSON). MarshalHeartbeat uses it only for a heartbeat
	// too large as plain JSON, and Unmarshal appends them to Files, so
	// readers see one list. (A coordinator older than this field does not
	// see those files: upgrade coordinators first.)
	FilesZ []byte `json:"files_z,omitempty"`
	// Truncated counts files the agent sees but left out because the value
	// would have grown past MaxHeartbeatBytes.
	Truncated int `json:"truncated,omitempty"`
}

// MarshalHeartbeat encodes h as plain JSON if that fits MaxHeartbeatBytes,
// otherwise with its files gzipped into FilesZ: names compress well, the
// random parts (the file key, a container id) do not, so a heartbeat holds
// 10,000 files named as Kubernetes names container logs, and more of
// plainer names.
// The caller checks the result against MaxHeartbeatBytes.
func MarshalHeartbeat(h *Heartbeat) ([]byte, error) {
	h.FilesZ = nil
	data, err := Marshal(h)
	if err != nil || len(data) <= MaxHeartbeatBytes {
		return data, err
	}
	plain, err := json.Marshal(h.Files)
	if err != nil {
		return nil, err
	}
	var z bytes.Buffer
	zw, err := gzip.NewWriterLevel(&z, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(plain); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	packed := *h
	packed.Files, packed.FilesZ = []SeenFile{}, z.Bytes()
	return Marshal(&packed)
}

// maxFilesZ bounds what FilesZ may expand to, so a hostile or broken value
// cannot make a reader allocate without bound.
const maxFilesZ = 64 << 20

// expand appends the files of FilesZ to Files.
func (h *Heartbeat) expand(what string) error {
	if len(h.FilesZ) == 0 {
		return nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(h.FilesZ))
	if err != nil {
		return fmt.Errorf("decode %s: files_z: %w", what, err)
	}
	plain, err := io.ReadAll(io.LimitReader(zr, maxFilesZ+1))
	if err != nil {
		return fmt.Errorf("decode %s: files_z: %w", what, err)
	}
	if len(plain) > maxFilesZ {
		return fmt.Errorf("decode %s: files_z expands past %d bytes", what, maxFilesZ)
	}
	var more []SeenFile
	if err := json.Unmarshal(plain, &more); err != nil {
		return fmt.Errorf("decode %s: files_z: %w", what, err)
	}
	h.Files, h.FilesZ = append(h.Files, more...), nil
	return nil
}

// MaxHeartbeatBytes keeps a heartbeat well inside etcd's default request
// limit of 1.5 MiB, leaving room for the key and the request's framing.
const MaxHeartbeatBytes = 1 << 20

// Assignment states.
const (
	StateActive   = "active"
	StateRevoking = "revoking"
)

// Assignment is the value of /assign/<agent>/<P>/<file>.
type Assignment struct {
	V        int    `json:"v"`
	State    string `json:"state"`              // active or revoking
	Path     string `json:"path"`               // where the assignee reported the file
	Leader   string `json:"leader"`             // coordinator id that wrote it
	Revoking string `json:"revoking,omitempty"` // while revoking: the agent the file goes to next
}

// Checkpoint is the value of /offsets/<P>/<file>.
type Checkpoint struct {
	V        int          `json:"v"`
	Offset   int64        `json:"offset"` // byte offset just past the last acknowledged line
	Identity FileIdentity `json:"identity"`
	Path     string       `json:"path"`
	Agent    string       `json:"agent"`
	Size     int64        `json:"size"` // file size when written, for lag reports
	Updated  time.Time    `json:"updated"`
}

// AgentStatus is the value of /status/agents/<agent>.
type AgentStatus struct {
	V       int       `json:"v"`
	Agent   string    `json:"agent"`
	Version string    `json:"version"`
	Updated time.Time `json:"updated"`
	// Problems are the things an operator should look at, keyed by a stable
	// id (such as "topic/web" or "file/web/<path>") so they can be updated.
	Problems []Problem `json:"problems"`
	// Unlisted counts problems left out of Problems to keep the value
	// within etcd's request size (thousands of unreadable files); the
	// agent's log has every one.
	Unlisted int `json:"unlisted,omitempty"`
	// LostBytes counts bytes of files deleted before they were shipped.
	LostBytes int64 `json:"lost_bytes"`
}

// Problem is one thing wrong on an agent.
type Problem struct {
	Topic string    `json:"topic,omitempty"`
	Path  string    `json:"path,omitempty"`
	Kind  string    `json:"kind"` // such as "topic-refused", "unreadable", "lost-bytes"
	Error string    `json:"error"`
	Since time.Time `json:"since"`
}

// Value is a pointer to one of this package's values: only they carry
// the format version that Marshal stamps and Unmarshal checks.
type Value interface {
	setV()
	version() int
}

// Marshal encodes a value, stamping the format version.
func Marshal(v Value) ([]byte, error) {
	v.setV()
	return json.Marshal(v)
}

func (h *Heartbeat) setV()   { h.V = Version }
func (a *Assignment) setV()  { a.V = Version }
func (c *Checkpoint) setV()  { c.V = Version }
func (s *AgentStatus) setV() { s.V = Version }

// Unmarshal decodes a value and checks its version. Fields this build does
// not know are ignored: a newer build may have added them, and refusing them
// would stop a fleet that is upgraded host by host. Known fields must still
// have their type, and the version must be one this build reads. what names
// the value in errors (usually its key).
func Unmarshal(what string, data []byte, v Value) error {
	// json.Unmarshal, not a Decoder: a leader listing a million values
	// allocated a Decoder and its read buffer for each, over 1 GB at a
	// million files. A Decoder only words the error when there is one.
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(what, data, v, err)
	}
	if got := v.version(); got != Version {
		return fmt.Errorf("%w: %s has v=%d, this build reads v=%d", ErrVersion, what, got, Version)
	}
	if h, ok := v.(*Heartbeat); ok {
		return h.expand(what)
	}
	return nil
}

// decodeError words why data does not decode (trailing data named as
// such), decoding it again with a Decoder; err is json.Unmarshal's.
func decodeError(what string, data []byte, v Value, err error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if derr := dec.Decode(v); derr != nil {
		return fmt.Errorf("decode %s: %w", what, derr)
	}
	if _, terr := dec.Token(); terr != io.EOF {
		return fmt.Errorf("decode %s: trailing data after the JSON value", what)
	}
	return fmt.Errorf("decode %s: %w", what, err)
}

func (h *Heartbeat) version() int   { return h.V }
func (a *Assignment) version() int  { return a.V }
func (c *Checkpoint) version() int  { return c.V }
func (s *AgentStatus) version() int { return s.V }
