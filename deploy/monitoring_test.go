package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// metricName matches logferry's own metric names in PromQL or prose.
var metricName = regexp.MustCompile(`\b(?:logagent|logferry|coordinator)_[a-z0-9_]*[a-z0-9]`)

// TestAlertRulesPromtool: promtool accepts the rules, and its unit tests
// of them (prometheus/alerts_test.yml) pass.
func TestAlertRulesPromtool(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool is not installed: the alert rules are not checked (Debian's prometheus package has it)")
	}
	run(t, "promtool", "check", "rules", "prometheus/alerts.yml")
	run(t, "promtool", "test", "rules", "prometheus/alerts_test.yml")
}

// TestDashboardAndAlertsNameRealMetrics: the dashboard is Grafana JSON
// whose every panel queries the chosen data source; every metric it and the
// alert rules name is one the code defines; and every metric the
// operations guide says to alert on has a rule.
func TestDashboardAndAlertsNameRealMetrics(t *testing.T) {
	defined := definedMetrics(t)
	exists := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && defined(base) {
				return true
			}
		}
		return false
	}

	raw, err := os.ReadFile("grafana/logferry.json")
	require.NoError(t, err)
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash), "grafana/logferry.json")
	require.NotEmpty(t, dash.UID)
	require.Contains(t, dash.Templating.List, struct{ Name, Type string }{"datasource", "datasource"})
	ids := map[int]bool{}
	var used []string
	for _, p := range dash.Panels {
		require.False(t, ids[p.ID], "panel id %d used twice", p.ID)
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, "panel %q", p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, "panel %q", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q: %s", p.Title, tg.Expr)
			used = append(used, names...)
		}
	}
	for _, n := range used {
		require.True(t, exists(n), "the dashboard queries %s, which no code defines", n)
	}

	rules, err := os.ReadFile("prometheus/alerts.yml")
	require.NoError(t, err)
	inRules := map[string]bool{}
	for _, n := range metricName.FindAllString(string(rules), -1) {
		require.True(t, exists(n), "an alert rule uses %s, which no code defines", n)
		inRules[n] = true
	}
	ops, err := os.ReadFile("../docs/operations.md")
	require.NoError(t, err)
	_, table, ok := strings.Cut(string(ops), "| metric | alert when | means |")
	require.True(t, ok, "docs/operations.md has the table of metrics to alert on")
	table, _, _ = strings.Cut(table, "\n\n")
	for _, n := range metricName.FindAllString(table, -1) {
		require.True(t, inRules[n], "docs/operations.md says to alert on %s; prometheus/alerts.yml has no rule for it", n)
	}
}

// definedMetrics reads every string literal of the non-test Go code under
// cmd/, pkg/ and internal/, and says whether a metric name is one of them
// or is built from them the ways the code builds names: a literal, a prefix
// and a suffix ("logagent" + "_lease_held"), or Prometheus's namespace,
// subsystem and name joined by underscores.
func definedMetrics(t *testing.T) func(string) bool {
	t.Helper()
	lits := map[string]bool{}
	for _, dir := range []string{"../cmd", "../pkg", "../internal"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						lits[s] = true
					}
				}
				return true
			})
			return nil
		})
		require.NoError(t, err)
	}
	var all []string
	for l := range lits {
		all = append(all, l)
	}
	sort.Strings(all)
	return func(name string) bool {
		if lits[name] {
			return true
		}
		for _, a := range all {
			rest, ok := strings.CutPrefix(name, a)
			if !ok || rest == "" {
				continue
			}
			if strings.HasPrefix(rest, "_") && lits[rest] {
				return true
			}
			for _, b := range all {
				if r2, ok := strings.CutPrefix(rest, "_"+b+"_"); ok && lits[r2] {
					return true
				}
			}
		}
		return false
	}
}
