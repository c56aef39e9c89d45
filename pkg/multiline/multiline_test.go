package multiline

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

// lines turns text into tailer lines with exact offsets.
func lines(text string) []tailer.Line {
	var out []tailer.Line
	var off int64
	for _, s := range strings.SplitAfter(text, "\n") {
		if s == "" {
			continue
		}
		data := strings.TrimSuffix(s, "\n")
		out = append(out, tailer.Line{Start: off, End: off + int64(len(s)), Data: []byte(data), Last: true})
		off += int64(len(s))
	}
	return out
}

func join(t *testing.T, m topics.Multiline, text string) []Event {
	t.Helper()
	cfg := topics.Config{Paths: []string{"/x"}, Multiline: &m}
	require.NoError(t, cfg.Validate("t"))
	j, err := New(cfg.Multiline, 1<<20)
	require.NoError(t, err)
	var out []Event
	for _, l := range lines(text) {
		out = append(out, j.Add(l)...)
	}
	if e, ok := j.Flush(); ok {
		out = append(out, e)
	}
	return out
}

func datas(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Data))
	}
	return out
}

const javaTrace = `2026-11-21 10:00:00 INFO started
2026-11-21 10:00:01 ERROR request failed
java.lang.IllegalStateException: boom
	at com.example.Handler.handle(Handler.java:42)
	at com.example.Server.run(Server.java:7)
Caused by: java.io.IOException: closed
	... 2 more
2026-11-21 10:00:02 INFO recovered
`

func TestJavaStackTraceNegateAfter(t *testing.T) {
	// Every line not starting with a date belongs to the line before.
	evs := join(t, topics.Multiline{Pattern: `^\d{4}-\d{2}-\d{2}`, Negate: true, Match: "after"}, javaTrace)
	require.Equal(t, []string{
		"2026-11-21 10:00:00 INFO started",
		"2026-11-21 10:00:01 ERROR request failed\njava.lang.IllegalStateException: boom\n\tat com.example.Handler.handle(Handler.java:42)\n\tat com.example.Server.run(Server.java:7)\nCaused by: java.io.IOException: closed\n\t... 2 more",
		"2026-11-21 10:00:02 INFO recovered",
	}, datas(evs))
	// Offsets: contiguous, and each event's data is the file's bytes with
	// its lines' newlines.
	var next int64
	for _, e := range evs {
		require.Equal(t, next, e.Start)
		require.Equal(t, string(e.Data)+"\n", javaTrace[e.Start:e.End])
		next = e.End
	}
	require.Equal(t, int64(len(javaTrace)), next)
	require.Equal(t, 6, evs[1].Lines)
}

func TestContinuationAfter(t *testing.T) {
	evs := join(t, topics.Multiline{Pattern: `^\s`, Match: "after"}, "a\n b\n c\nd\ne\n f\n")
	require.Equal(t, []string{"a\n b\n c", "d", "e\n f"}, datas(evs))
}

func TestContinuationBefore(t *testing.T) {
	// Lines ending in a backslash continue into the next line.
	evs := join(t, topics.Multiline{Pattern: `\\$`, Match: "before"}, "one \\\ntwo \\\nthree\nfour\nfive \\\nsix\n")
	require.Equal(t, []string{"one \\\ntwo \\\nthree", "four", "five \\\nsix"}, datas(evs))
}

func TestRunawayEventIsCut(t *testing.T) {
	text := "start\n" + strings.Repeat(" more\n", 9) + "next\n"
	evs := join(t, topics.Multiline{Pattern: `^\s`, Match: "after", MaxLines: 4}, text)
	require.Len(t, evs, 4)
	require.True(t, evs[0].Cut)
	require.Equal(t, 4, evs[0].Lines)
	require.True(t, evs[1].Cut)
	require.False(t, evs[3].Cut)
	require.Equal(t, "next", string(evs[3].Data))
	var n int
	for _, e := range evs {
		n += e.Lines
	}
	require.Equal(t, 11, n, "a cut drops no line")
}

func TestMaxBytesTruncates(t *testing.T) {
	j, err := New(&topics.Multiline{Pattern: `^\s`, Match: "after", MaxLines: 100}, 10)
	require.NoError(t, err)
	for _, l := range lines("abcdef\n ghijkl\n") {
		require.Empty(t, j.Add(l))
	}
	e, ok := j.Flush()
	require.True(t, ok)
	require.Equal(t, "abcdef\n gh", string(e.Data))
	require.True(t, e.Truncated)
	require.Equal(t, int64(15), e.End, "the event still ends after its last line")
}

func TestSplitPartsRejoin(t *testing.T) {
	j, err := New(&topics.Multiline{Pattern: `^\s`, Match: "after", MaxLines: 100}, 1<<20)
	require.NoError(t, err)
	parts := []tailer.Line{
		{Start: 0, End: 4, Data: []byte("abcd"), Part: 1},
		{Start: 4, End: 7, Data: []byte("ef"), Part: 2, Last: true},
		{Start: 7, End: 10, Data: []byte(" x"), Last: true},
	}
	for _, l := range parts {
		require.Empty(t, j.Add(l))
	}
	e, _ := j.Flush()
	require.Equal(t, "abcdef\n x", string(e.Data))
	require.Equal(t, 2, e.Lines)
}

// The tailer reuses a line's memory once Add returns: an event keeps
// copies, never the lines' own bytes.
func TestEventsCopyTheirLines(t *testing.T) {
	j, err := New(&topics.Multiline{Pattern: `^\s`, Match: "after", MaxLines: 100}, 1<<20)
	require.NoError(t, err)
	buf := []byte("first")
	require.Empty(t, j.Add(tailer.Line{Start: 0, End: 6, Data: buf, Last: true}))
	copy(buf, " cont")
	require.Empty(t, j.Add(tailer.Line{Start: 6, End: 12, Data: buf, Last: true}))
	copy(buf, "XXXXX")
	e, ok := j.Flush()
	require.True(t, ok)
	require.Equal(t, "first\n cont", string(e.Data))
}
