package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http keeps idle keep-alive connections of the scrapes.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

func TestFlagErrorsNameTheFlag(t *testing.T) {
	bin := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bin", bin}, "logagent not found"},
		{[]string{"--agents", "0"}, "--agents 0"},
		{[]string{"--rate", "-1"}, "--rate -1"},
		{[]string{"--files", "0"}, "--files 0"},
	} {
		_, err := parse(tc.args, io.Discard)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}

func TestConcurrentShippingDetection(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		rs   []shipped
		want bool
	}{
		{"one host", []shipped{{"a", at(0)}, {"a", at(5)}, {"a", at(10)}}, false},
		{"handover", []shipped{{"a", at(0)}, {"a", at(10)}, {"b", at(400)}, {"b", at(410)}}, false},
		{"crash and back", []shipped{{"a", at(0)}, {"b", at(3000)}, {"a", at(9000)}}, false},
		{"interleaved", []shipped{{"a", at(0)}, {"b", at(10)}, {"a", at(20)}, {"b", at(30)}}, true},
		{"interleaved, unsorted input", []shipped{{"b", at(10)}, {"a", at(20)}, {"a", at(0)}}, true},
	} {
		require.Equal(t, tc.want, concurrentShipping(tc.rs), tc.name)
	}
}

// TestCheckFailsOnLossAndBadDuplicates: the check behind `make chaos` and
// the system tests fails (so devstack exits non-zero) when a line is
// missing or a duplicate differs from its original, names the missing
// lines, and passes when every line is there once or copied.
func TestCheckFailsOnLossAndBadDuplicates(t *testing.T) {
	k := testenv.StartKafka(t)
	line := func(seq int) string {
		return fmt.Sprintf("2026-11-22T00:00:00Z app-0 seq=%08d GET /api/v1/items/1 HTTP/1.1 200 1 \"logferry-demo\"", seq)
	}
	produce := func(seqs ...int) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.AllowAutoTopicCreation())
		require.NoError(t, err)
		defer cl.Close()
		for _, s := range seqs {
			r := &kgo.Record{Topic: demoTopic, Value: []byte(line(s)), Headers: []kgo.RecordHeader{
				{Key: "file", Value: []byte("f0")}, {Key: "offset", Value: []byte(strconv.Itoa(s * 100))},
				{Key: "host", Value: []byte("127.0.0.2")}}}
			require.NoError(t, cl.ProduceSync(context.Background(), r).FirstErr())
		}
	}
	check := func(written int64) (string, error) {
		st := &stack{o: &options{agents: 1, files: 1, checkTimeout: time.Second}, kafkaBrokers: k.Brokers()}
		defer st.close()
		st.written.Store(written)
		var out strings.Builder
		err := st.verify(&out)
		return out.String(), err
	}

	produce(1, 2, 4, 5)
	_, err := check(5)
	require.ErrorContains(t, err, "check FAILED")
	require.ErrorContains(t, err, "lost 1,")
	require.ErrorContains(t, err, "app-0: [3-3]", "the missing line is named")

	produce(3, 3) // the missing line, and a copy of it
	out, err := check(5)
	require.NoError(t, err)
	require.Contains(t, out, "check OK: lines to deliver 5, delivered 5, lost 0, duplicated 1")

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	require.NoError(t, err)
	defer cl.Close()
	bad := &kgo.Record{Topic: demoTopic, Value: []byte("something else"), Headers: []kgo.RecordHeader{
		{Key: "file", Value: []byte("f0")}, {Key: "offset", Value: []byte("100")}, {Key: "host", Value: []byte("127.0.0.2")}}}
	require.NoError(t, cl.ProduceSync(context.Background(), bad).FirstErr())
	_, err = check(5)
	require.ErrorContains(t, err, "duplicates that differ from their original 1")
}
