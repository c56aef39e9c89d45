package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
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
