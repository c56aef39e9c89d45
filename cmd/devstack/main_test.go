package main

import (
	"io"
	"testing"

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
