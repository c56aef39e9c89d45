package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pkgSpec is what one .deb must install.
type pkgSpec struct {
	name, binary, unit, sysusers, defaults string
}

var debs = []pkgSpec{
	{"logferry-agent", "logagent", "logagent.service", "logferry-agent", "logagent"},
	{"logferry-coordinator", "coordinator", "coordinator.service", "logferry-coordinator", "coordinator"},
	{"logferry-logctl", "logctl", "", "", ""},
}

// packagesDir is where the .debs are: $LOGFERRY_PACKAGES (make package-test
// sets it after building them), or built here by make package.
func packagesDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LOGFERRY_PACKAGES"); d != "" {
		return d
	}
	if testing.Short() {
		t.Skip("builds the packages (make package); run make package-test")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed: cannot build the packages to check them")
	}
	cmd := exec.Command("make", "-C", "..", "package")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make package:\n%s", out)
	return filepath.Join("..", "bin", "packages")
}

// TestPackages installs each .deb into a scratch root with dpkg -x and
// checks that the binary runs, the unit is the repository's and names a
// binary, a user and a defaults file the package installs, and that the
// defaults file is a root-only conffile.
func TestPackages(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg is not installed: the .deb packages are not checked (Debian's dpkg package has it)")
	}
	dir := packagesDir(t)
	for _, p := range debs {
		t.Run(p.name, func(t *testing.T) {
			matches, err := filepath.Glob(filepath.Join(dir, p.name+"_*.deb"))
			require.NoError(t, err)
			require.Len(t, matches, 1, "one %s .deb in %s", p.name, dir)
			deb := matches[0]
			root := t.TempDir()
			run(t, "dpkg", "-x", deb, root)
			require.Equal(t, p.name, strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Package")))

			bin := filepath.Join(root, "usr/bin", p.binary)
			fi, err := os.Stat(bin)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "%s mode", bin)
			require.True(t, strings.HasPrefix(run(t, bin, "--version"), p.binary+" "), "the packaged %s runs", p.binary)
			if p.unit == "" {
				return
			}

			unitPath := filepath.Join(root, "usr/lib/systemd/system", p.unit)
			unit, err := os.ReadFile(unitPath)
			require.NoError(t, err)
			src, err := os.ReadFile(filepath.Join("systemd", p.unit))
			require.NoError(t, err)
			require.Equal(t, string(src), string(unit), "the packaged unit is the repository's")
			keys := unitKeys(unit)
			for _, k := range []string{"ExecStart", "ExecStartPre"} {
				require.NotEmpty(t, keys[k], "%s has %s", p.unit, k)
				for _, line := range keys[k] {
					exe := strings.Fields(line)[0]
					require.FileExists(t, filepath.Join(root, exe), "%s=%s: the package installs it", k, line)
				}
			}
			require.Contains(t, keys["ExecStartPre"][0], "--check-config")

			sysusers, err := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d", p.sysusers+".conf"))
			require.NoError(t, err)
			require.Len(t, keys["User"], 1)
			require.Regexp(t, `(?m)^u\s+`+keys["User"][0]+`\s`, string(sysusers), "sysusers.d creates the unit's User=")

			require.Equal(t, []string{"-/etc/default/" + p.defaults}, keys["EnvironmentFile"])
			defaults := filepath.Join(root, "etc/default", p.defaults)
			fi, err = os.Stat(defaults)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "%s may hold passwords", defaults)

			ctrl := t.TempDir()
			run(t, "dpkg-deb", "-e", deb, ctrl)
			conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
			require.NoError(t, err)
			require.Contains(t, string(conffiles), "/etc/default/"+p.defaults, "an operator's settings survive upgrades")
			postinst, err := os.ReadFile(filepath.Join(ctrl, "postinst"))
			require.NoError(t, err)
			require.Contains(t, string(postinst), "systemd-sysusers "+p.sysusers+".conf")
		})
	}
}

// unitKeys reads a unit file's Key=value lines (all sections).
func unitKeys(unit []byte) map[string][]string {
	keys := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			keys[k] = append(keys[k], v)
		}
	}
	return keys
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", name, args, out)
	return string(out)
}
