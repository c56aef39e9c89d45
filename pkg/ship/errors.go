package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/segmentio/kafka-go"
)

// RejectedError is the error an Ack receives for a record that was not
// written and never will be. It matches ErrRejected with errors.Is and
// unwraps to the cause (a kafka.Error where Kafka answered).
type RejectedError struct {
	Topic string
	// Reason is the label of the record in the
	// logferry_ship_rejected_records_total metric, such as
	// "message_size_too_large" or "invalid_topic".
	Reason string
	Err    error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("ship: record for topic %q rejected (%s): %v", e.Topic, e.Reason, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRejected) hold.
func (e *RejectedError) Is(target error) bool { return target == ErrRejected }

// class is what to do with a record a write attempt returned an error for.
type class uint8

const (
	// retriable: write it again after a backoff.
	retriable class = iota
	// fatal: ack it with the error; no retry can succeed.
	fatal
	// isolate: fatal for a record written alone. Kafka answers for a
	// partition's whole batch, so in a batch of several the culprit may be
	// one record (or, for MESSAGE_TOO_LARGE, the batch's size): write the
	// records again in smaller batches until the error is a record's own.
	isolate
)

// classify sorts a write error and names its reason for metrics and logs.
// Reasons come from a closed set (Kafka's error titles and a few of our
// own), so the metric labels stay bounded.
func classify(err error) (class, string) {
	var ke kafka.Error
	if errors.As(err, &ke) {
		reason := snake(ke.Title())
		if reason == "" {
			reason = "kafka_error"
		}
		switch ke {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge,
			kafka.InvalidRecord,    // e.g. a keyless record on a compacted topic
			kafka.InvalidTimestamp: // outside the topic's allowed timestamp range
			return isolate, reason
		case kafka.InvalidTopic, // the name is illegal
			kafka.TopicAuthorizationFailed,    // this topic only; others may work
			kafka.PolicyViolation,             // the broker's policy refuses the topic
			kafka.UnsupportedForMessageFormat: // the topic's message.format.version
			return fatal, reason
		}
		// Temporary errors (NOT_ENOUGH_REPLICAS, LEADER_NOT_AVAILABLE, ...)
		// and errors about the whole client (SASL_AUTHENTICATION_FAILED,
		// CLUSTER_AUTHORIZATION_FAILED, UNSUPPORTED_VERSION, ...) alike: see
		// doc.go for why the latter block rather than reject.
		return retriable, reason
	}
	var mtl kafka.MessageTooLargeError
	if errors.As(err, &mtl) {
		// kafka-go refused a record above its BatchBytes; our own size check
		// should have caught it first.
		return isolate, "message_size_too_large"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return retriable, "timeout"
	}
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return retriable, "network"
	}
	return retriable, "other"
}

// isClientWide tells a retriable Kafka error that no retry will fix without
// an operator (bad credentials, missing ACL, incompatible broker) from an
// ordinary transient one; the former is logged at error level.
func isClientWide(err error) bool {
	if c, _ := classify(err); c != retriable {
		return false
	}
	var ke kafka.Error
	return errors.As(err, &ke) && !ke.Temporary() &&
		ke != kafka.BrokerNotAvailable && ke != kafka.ReplicaNotAvailable
}

// snake turns "Not Enough Replicas" into "not_enough_replicas".
func snake(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// validTopic reports whether name is a legal Kafka topic name: 1 to 249 of
// [A-Za-z0-9._-], and not "." or "..".
func validTopic(name string) bool {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
