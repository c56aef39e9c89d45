package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/topics"
)

// shipped reports whether topic holds a record with value v.
func (e *env) shipped(topic, v string) bool {
	for _, r := range e.records(topic) {
		if r.Value == v {
			return true
		}
	}
	return false
}

// TestRotationBursts rotates app.log twelve times, half of them faster than
// the agent finds and reads the generations, with the topic's glob
// matching the rotated names: every line arrives exactly once. The real
// logrotate runs in copytruncate and in create mode where it is installed;
// copytruncate emulated in Go runs everywhere.
func TestRotationBursts(t *testing.T) {
	bin, err := exec.LookPath("logrotate")
	for _, mode := range []string{"copytruncate in Go", "copytruncate", "create"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			rotate := func() { copytruncate(t, e.path("app.log"), 50) }
			if mode != "copytruncate in Go" {
				if err != nil {
					t.Skip("logrotate is not installed (apt-get install logrotate)")
				}
				conf := filepath.Join(t.TempDir(), "logrotate.conf")
				require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "%s {\n\t%s\n\trotate 50\n\tmissingok\n}\n", e.path("app.log"), mode), 0o644))
				state := filepath.Join(t.TempDir(), "logrotate.state")
				rotate = func() {
					out, err := exec.Command(bin, "-f", "-s", state, conf).CombinedOutput()
					require.NoError(t, err, "logrotate: %s", out)
				}
			}
			e.putTopic("lr", topics.Config{Paths: []string{e.dir + "/app.log*"}})
			e.startAgent("h1")
			e.autoAssign("lr", "h1")
			lines := 0
			for i := range 12 {
				// The application opens the file for every burst, as one
				// that reopens its log after rotation does; its writes do
				// not race logrotate's copy and truncation, whose window
				// loses lines by design.
				e.writeLines("app.log", lines, lines+300)
				lines += 300
				if i%2 == 0 {
					// Half the generations are read from app.log before the
					// rotation (their copies must not ship them again), half
					// are rotated before the agent gets to them.
					last := fmt.Sprintf("app.log line %06d", lines-1)
					testenv.WaitFor(t, 20*time.Second, last, func() bool { return e.shipped("lr", last) })
				}
				rotate()
			}
			e.writeLines("app.log", lines, lines+300)
			lines += 300
			e.checkExactlyOnce("lr", map[string]int{"app.log": lines}, 60*time.Second)
		})
	}
}

// copytruncate does what logrotate's copytruncate does: path.N ->
// path.N+1 down to path.1 -> path.2, then path is copied to path.1 and
// truncated in place.
func copytruncate(t *testing.T, path string, keep int) {
	t.Helper()
	for i := keep - 1; i >= 1; i-- {
		err := os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1))
		if !os.IsNotExist(err) {
			require.NoError(t, err)
		}
	}
	src, err := os.Open(path)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	require.NoError(t, os.Truncate(path, 0))
}
