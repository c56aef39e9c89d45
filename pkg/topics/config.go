package topics

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/logferry/logferry/pkg/keyspace"
)

// Values of the enumerated fields.
const (
	KeyFile = "file" // partition key: the file key (one file's lines stay ordered)
	KeyHost = "host" // partition key: the agent id
	KeyNone = "none" // no key: the writer's balancer spreads records

	StartBeginning = "beginning"
	StartEnd       = "end"

	LongLinesSplit    = "split"
	LongLinesTruncate = "truncate"

	MatchAfter  = "after"
	MatchBefore = "before"
)

// Defaults and bounds. MaxLineBytesLimit keeps one record, with its headers,
// inside Kafka's default max.message.bytes (1,048,588).
const (
	DefaultMaxLineBytes = 256 << 10
	MinMaxLineBytes     = 64
	MaxLineBytesLimit   = 1_000_000

	DefaultMultilineMaxLines = 500
	MaxMultilineMaxLines     = 100_000
	DefaultMultilineTimeout  = 5 * time.Second
	MinMultilineTimeout      = 10 * time.Millisecond
	MaxMultilineTimeout      = 10 * time.Minute

	MinIgnoreOlder = time.Second
	MaxIgnoreOlder = 10 * 365 * 24 * time.Hour

	MaxPaths      = 64
	MaxPatternLen = 4096
)

// Config is one topic directory's configuration, the JSON value of
// /topics/<P>. Validate fills every default explicitly, so a validated
// Config encodes to the complete configuration that agents act on.
type Config struct {
	// Paths are absolute globs; "**" matches any number of directories.
	Paths []string `json:"paths"`
	// Exclude drops matches: an absolute glob is matched against the whole
	// path, a relative one against the file's base name.
	Exclude []string `json:"exclude"`
	// KafkaTopic is where the lines go. Default: the topic directory's name.
	KafkaTopic string `json:"kafka_topic"`
	// Shared says the paths are on a volume every member mounts: each file
	// goes to one member. Otherwise each host ships what it sees itself.
	Shared bool `json:"shared"`
	// Multiline, when set, joins continuation lines into one event.
	Multiline *Multiline `json:"multiline,omitempty"`
	// MaxLineBytes caps one record's value.
	MaxLineBytes int `json:"max_line_bytes"`
	// LongLines says what happens to a longer line: split into several
	// records or truncated; either way the records are flagged.
	LongLines string `json:"long_lines"`
	// IgnoreOlder skips files not modified for this long (0: off).
	IgnoreOlder Duration `json:"ignore_older"`
	// Key is the partition key: file, host or none.
	Key string `json:"key"`
	// StartAt applies to files with no checkpoint: beginning or end.
	StartAt string `json:"start_at"`
	// Paused keeps the topic's checkpoints and assignments but ships nothing.
	Paused bool `json:"paused"`
}

// Multiline joins lines into events the way Filebeat's multiline does: a
// line matching Pattern (or not matching it, with Negate) belongs to the
// previous line (Match after) or to the next one (Match before).
type Multiline struct {
	Pattern  string   `json:"pattern"`
	Negate   bool     `json:"negate"`
	Match    string   `json:"match"`
	MaxLines int      `json:"max_lines"`
	Timeout  Duration `json:"timeout"`
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("30s", "24h"). Plain numbers are rejected: a bare 30 is ambiguous.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

var durationType = reflect.TypeFor[Duration]()

// UnmarshalJSON reads a Go duration string. Its errors are
// *json.UnmarshalTypeError so that encoding/json adds the field's name.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: durationType}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%q", s), Type: durationType}
	}
	*d = Duration(v)
	return nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// FieldError is a validation or decoding failure of one field.
type FieldError struct {
	Field  string // JSON path, such as "paths[2]" or "multiline.pattern"
	Value  string // the bad value as written, quoted when it is a string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", e.Field, e.Value, e.Reason)
}

// ErrInvalid marks every decoding or validation failure.
var ErrInvalid = errors.New("topics: invalid topic config")

// Decode reads one topic's config strictly: unknown fields, wrong types and
// trailing data are errors naming the field. It validates the result and
// fills in defaults; name is the topic directory's name.
func Decode(name string, data []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, invalid(name, decodeError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, invalid(name, &FieldError{Field: "(document)", Reason: "trailing data after the JSON object"})
	}
	if err := c.Validate(name); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Encode writes a validated config as the JSON stored in etcd.
func (c Config) Encode() ([]byte, error) {
	return json.Marshal(c)
}

func invalid(name string, errs ...error) error {
	return fmt.Errorf("%w %q: %w", ErrInvalid, name, errors.Join(errs...))
}

func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "(document)"
		}
		if typeErr.Type == durationType {
			return &FieldError{Field: field, Value: typeErr.Value, Reason: `not a duration; want a string such as "30s" or "24h"`}
		}
		return &FieldError{Field: field, Value: typeErr.Value, Reason: "wrong type, want " + jsonKind(typeErr.Type)}
	case errors.As(err, &syntaxErr):
		return &FieldError{Field: "(document)", Reason: fmt.Sprintf("JSON syntax error at byte %d: %v", syntaxErr.Offset, err)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &FieldError{Field: "(document)", Reason: "empty or cut-off JSON"}
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return &FieldError{Field: strings.Trim(f, `"`), Reason: "unknown field"}
	}
	// Errors from our own UnmarshalJSON methods do not say which field
	// they came from; encoding/json prefixes nothing, so keep the text.
	return &FieldError{Field: "(document)", Reason: msg}
}

// Validate checks every field and fills defaults. name is the topic
// directory's name, which is also the default Kafka topic.
func (c *Config) Validate(name string) error {
	var errs []error
	fail := func(field, value, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	if err := keyspace.ValidateTopic(name); err != nil {
		fail("(name)", fmt.Sprintf("%q", name), err.Error())
	}

	switch {
	case len(c.Paths) == 0:
		fail("paths", "", "at least one path glob is required")
	case len(c.Paths) > MaxPaths:
		fail("paths", fmt.Sprint(len(c.Paths)), fmt.Sprintf("at most %d globs allowed", MaxPaths))
	}
	for i, p := range c.Paths {
		if reason := checkGlob(p, true); reason != "" {
			fail(fmt.Sprintf("paths[%d]", i), fmt.Sprintf("%q", p), reason)
		}
	}
	if len(c.Exclude) > MaxPaths {
		fail("exclude", fmt.Sprint(len(c.Exclude)), fmt.Sprintf("at most %d globs allowed", MaxPaths))
	}
	for i, p := range c.Exclude {
		if reason := checkGlob(p, false); reason != "" {
			fail(fmt.Sprintf("exclude[%d]", i), fmt.Sprintf("%q", p), reason)
		}
	}
	if c.Exclude == nil {
		c.Exclude = []string{}
	}

	if c.KafkaTopic == "" {
		c.KafkaTopic = name
	} else if err := keyspace.ValidateTopic(c.KafkaTopic); err != nil {
		fail("kafka_topic", fmt.Sprintf("%q", c.KafkaTopic), "not a valid Kafka topic name ([A-Za-z0-9._-], 1..249)")
	}

	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	} else if c.MaxLineBytes < MinMaxLineBytes || c.MaxLineBytes > MaxLineBytesLimit {
		fail("max_line_bytes", fmt.Sprint(c.MaxLineBytes),
			fmt.Sprintf("must be between %d and %d", MinMaxLineBytes, MaxLineBytesLimit))
	}
	c.LongLines = defaulted(c.LongLines, LongLinesSplit)
	if !oneOf(c.LongLines, LongLinesSplit, LongLinesTruncate) {
		fail("long_lines", fmt.Sprintf("%q", c.LongLines), "want split or truncate")
	}
	if c.IgnoreOlder != 0 && (c.IgnoreOlder.Std() < MinIgnoreOlder || c.IgnoreOlder.Std() > MaxIgnoreOlder) {
		fail("ignore_older", c.IgnoreOlder.Std().String(),
			fmt.Sprintf("must be 0 (off) or between %v and %v", MinIgnoreOlder, MaxIgnoreOlder))
	}
	c.Key = defaulted(c.Key, KeyFile)
	if !oneOf(c.Key, KeyFile, KeyHost, KeyNone) {
		fail("key", fmt.Sprintf("%q", c.Key), "want file, host or none")
	}
	c.StartAt = defaulted(c.StartAt, StartBeginning)
	if !oneOf(c.StartAt, StartBeginning, StartEnd) {
		fail("start_at", fmt.Sprintf("%q", c.StartAt), "want beginning or end")
	}
	if m := c.Multiline; m != nil {
		errs = append(errs, m.validate()...)
	}
	if len(errs) > 0 {
		return invalid(name, errs...)
	}
	return nil
}

func (m *Multiline) validate() []error {
	var errs []error
	fail := func(field, value, reason string) {
		errs = append(errs, &FieldError{Field: "multiline." + field, Value: value, Reason: reason})
	}
	switch {
	case m.Pattern == "":
		fail("pattern", "", "required when multiline is set")
	case len(m.Pattern) > MaxPatternLen:
		fail("pattern", fmt.Sprint(len(m.Pattern)), fmt.Sprintf("longer than %d bytes", MaxPatternLen))
	default:
		if _, err := regexp.Compile(m.Pattern); err != nil {
			fail("pattern", fmt.Sprintf("%q", m.Pattern), "does not compile: "+err.Error())
		}
	}
	m.Match = defaulted(m.Match, MatchAfter)
	if !oneOf(m.Match, MatchAfter, MatchBefore) {
		fail("match", fmt.Sprintf("%q", m.Match), "want after or before")
	}
	if m.MaxLines == 0 {
		m.MaxLines = DefaultMultilineMaxLines
	} else if m.MaxLines < 1 || m.MaxLines > MaxMultilineMaxLines {
		fail("max_lines", fmt.Sprint(m.MaxLines), fmt.Sprintf("must be between 1 and %d", MaxMultilineMaxLines))
	}
	if m.Timeout == 0 {
		m.Timeout = Duration(DefaultMultilineTimeout)
	} else if m.Timeout.Std() < MinMultilineTimeout || m.Timeout.Std() > MaxMultilineTimeout {
		fail("timeout", m.Timeout.Std().String(),
			fmt.Sprintf("must be between %v and %v", MinMultilineTimeout, MaxMultilineTimeout))
	}
	return errs
}

// checkGlob returns why pattern is unusable, or "".
func checkGlob(pattern string, mustBeAbs bool) string {
	switch {
	case pattern == "":
		return "empty"
	case len(pattern) > MaxPatternLen:
		return fmt.Sprintf("longer than %d bytes", MaxPatternLen)
	case strings.ContainsRune(pattern, 0):
		return "contains a NUL byte"
	case mustBeAbs && !filepath.IsAbs(pattern):
		return "must be an absolute path"
	case !doublestar.ValidatePattern(pattern):
		return "not a valid glob"
	}
	if mustBeAbs && filepath.Clean(pattern) != pattern {
		// "/var/log/../etc/x" would let a topic escape the --allow-path roots
		// by a back door; "/var/log//x" is a typo. Both are refused.
		return fmt.Sprintf("not a clean path (want %q)", filepath.Clean(pattern))
	}
	return ""
}

// jsonKind names a Go type the way a JSON writer thinks of it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(jsonKind(t.Elem()), "a ") + "s"
	case reflect.Struct, reflect.Pointer:
		return "an object"
	}
	return t.String()
}

func defaulted(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}
