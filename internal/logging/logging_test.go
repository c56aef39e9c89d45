package logging

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNew(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "warn", "json")
	require.NoError(t, err)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &rec), b.String())
	require.Equal(t, "shown", rec["msg"])

	_, err = New(io.Discard, "loud", "text")
	require.ErrorContains(t, err, `--log-level "loud"`)
	_, err = New(io.Discard, "info", "xml")
	require.ErrorContains(t, err, `--log-format "xml"`)
}
