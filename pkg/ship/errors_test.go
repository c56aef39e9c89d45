package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		class  class
		reason string
	}{
		{kafka.NotEnoughReplicas, retriable, "not_enough_replicas"},
		{fmt.Errorf("%w: the ISR is short", kafka.NotEnoughReplicas), retriable, "not_enough_replicas"},
		{kafka.LeaderNotAvailable, retriable, "leader_not_available"},
		{kafka.NotLeaderForPartition, retriable, "not_leader_for_partition"},
		{kafka.RequestTimedOut, retriable, "request_timed_out"},
		{kafka.UnknownTopicOrPartition, retriable, "unknown_topic_or_partition"},
		{kafka.BrokerNotAvailable, retriable, "broker_not_available"},
		{kafka.SASLAuthenticationFailed, retriable, "sasl_authentication_failed"},
		{kafka.ClusterAuthorizationFailed, retriable, "cluster_authorization_failed"},
		{kafka.MessageSizeTooLarge, isolate, "message_size_too_large"},
		{kafka.RecordListTooLarge, isolate, "record_list_too_large"},
		{kafka.InvalidRecord, isolate, "invalid_record"},
		{kafka.MessageTooLargeError{}, isolate, "message_size_too_large"},
		{kafka.InvalidTopic, fatal, "invalid_topic"},
		{kafka.TopicAuthorizationFailed, fatal, "topic_authorization_failed"},
		{kafka.PolicyViolation, fatal, "policy_violation"},
		{kafka.Error(9999), retriable, "kafka_error"},
		{context.DeadlineExceeded, retriable, "timeout"},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, retriable, "network"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), retriable, "network"},
		{io.EOF, retriable, "network"},
		{errors.New("something new"), retriable, "other"},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			c, r := classify(tc.err)
			require.Equal(t, tc.class, c, "class")
			require.Equal(t, tc.reason, r, "reason")
		})
	}
	require.True(t, isClientWide(kafka.SASLAuthenticationFailed))
	require.False(t, isClientWide(kafka.NotEnoughReplicas))
	require.False(t, isClientWide(errors.New("x")))
	require.False(t, isClientWide(kafka.MessageSizeTooLarge), "a batch to split is routine")
}

func TestRejectedError(t *testing.T) {
	err := error(&RejectedError{Topic: "t", Reason: "invalid_topic", Err: kafka.InvalidTopic})
	require.ErrorIs(t, err, ErrRejected)
	require.ErrorIs(t, err, kafka.InvalidTopic)
	require.True(t, strings.HasPrefix(err.Error(), "ship: "), err.Error())
}

func TestValidTopic(t *testing.T) {
	for name, ok := range map[string]bool{
		"logs": true, "a.b_c-D9": true, strings.Repeat("x", 249): true,
		"": false, ".": false, "..": false, "bad topic": false, "a/b": false, "é": false, strings.Repeat("x", 250): false,
	} {
		require.Equal(t, ok, validTopic(name), "%q", name)
	}
}

func TestBackoffDoublesToCap(t *testing.T) {
	s := &Shipper{cfg: Config{RetryBackoffMin: 100 * time.Millisecond, RetryBackoffMax: 5 * time.Second}}
	for fails, want := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		7: 5 * time.Second, 40: 5 * time.Second, 1000: 5 * time.Second,
	} {
		for range 100 {
			d := s.backoff(fails)
			require.GreaterOrEqual(t, d, want/2, "backoff after %d failures", fails)
			require.LessOrEqual(t, d, want, "backoff after %d failures", fails)
		}
	}
}

func TestRecordSize(t *testing.T) {
	// 22 bytes of framing, the payload, a varint count of headers and
	// varint lengths of each header's key and value.
	require.Equal(t, int64(22+1), recordSize(nil, nil, nil, nil))
	require.Equal(t, int64(22+3+5+1), recordSize([]byte("key"), []byte("value"), nil, nil))
	h := []kafka.Header{{Key: "host", Value: make([]byte, 64)}}
	require.Equal(t, int64(22+1+(1+4)+(2+64)), recordSize(nil, nil, nil, h))
	// Shared headers count as the same headers listed would.
	h2 := []kafka.Header{{Key: "path", Value: []byte("/var/log/app.log")}, {Key: "nil"}}
	all := append(append([]kafka.Header(nil), h...), h2...)
	require.Equal(t, recordSize(nil, nil, nil, all), recordSize(nil, nil, NewHeaders(h...), h2))
	require.Equal(t, recordSize(nil, nil, nil, all), recordSize(nil, nil, NewHeaders(all...), nil))
}

// sum adds up every series of a counter vector.
func sum(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	var total float64
	for m := range ch {
		var pb dto.Metric
		require.NoError(t, m.Write(&pb))
		total += pb.GetCounter().GetValue()
	}
	return total
}

// TestSharedHeadersEncodeAsListed: a record with shared headers encodes
// byte for byte as the record listing the same headers first.
func TestSharedHeadersEncodeAsListed(t *testing.T) {
	shared := []kafka.Header{{Key: "host", Value: []byte("10.0.0.7")}, {Key: "nil"}, {Key: "empty", Value: []byte{}}}
	own := []kafka.Header{{Key: "offset", Value: []byte("12345")}}
	listed := appendBody(nil, &Record{Key: []byte("k"), Value: []byte("line"), Headers: append(append([]kafka.Header(nil), shared...), own...)})
	got := appendBody(nil, &Record{Key: []byte("k"), Value: []byte("line"), Shared: NewHeaders(shared...), Headers: own})
	require.Equal(t, listed, got)
	require.Equal(t, appendBody(nil, &Record{Headers: shared}), appendBody(nil, &Record{Shared: NewHeaders(shared...)}))
}
