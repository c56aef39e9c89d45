package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/roles"
)

// buildBinaries builds the named commands into a temporary directory.
func buildBinaries(t *testing.T, names ...string) string {
	t.Helper()
	bin := t.TempDir()
	for _, b := range names {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b), "../"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "build %s: %s", b, out)
	}
	return bin
}

// secureProc is one logferry binary run as a process with its own
// environment (which carries its password).
type secureProc struct {
	cmd *exec.Cmd
	out testenv.Buffer
}

func startProc(t *testing.T, path string, env []string, args ...string) *secureProc {
	t.Helper()
	p := &secureProc{cmd: exec.Command(path, args...)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and waits for a clean exit, once.
func (p *secureProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v after SIGTERM\n%s", p.cmd.Path, err, p.out.String())
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		t.Errorf("%s did not stop within 15 s of SIGTERM", p.cmd.Path)
	}
}

// runBin runs a binary to its end and returns its exit error and output.
func runBin(path string, env []string, args ...string) (string, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSecureEtcdEndToEnd runs logctl, a coordinator and an agent as
// processes against an etcd that requires TLS with client certificates and
// password auth, each under its least-privilege role, and checks that lines
// reach Kafka, that the agent's credentials cannot touch what only
// operators and coordinators may, and that no password shows anywhere.
func TestSecureEtcdEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs them against a TLS and auth etcd")
	}
	e := testenv.StartSecureEtcd(t)
	k := testenv.StartKafka(t)
	bin := buildBinaries(t, "logagent", "coordinator", "logctl")
	const agentID = "127.0.0.9"
	secrets := map[string]string{"root": e.RootPassword, "coord": "coord-pw-3f1d9b", agentID: "agent-pw-8c2e71", "ops": "ops-pw-5a0c44"}
	kafkaSecret := "kafka-sasl-pw-77e1"
	logctlAs := func(user string, args ...string) string {
		t.Helper()
		out, err := runBin(filepath.Join(bin, "logctl"), []string{"LOGCTL_ETCD_PASSWORD=" + secrets[user]},
			append(e.ClientFlags(user), args...)...)
		require.NoError(t, err, "logctl %v as %s: %s", args, user, out)
		return out
	}

	logctlAs("root", "roles", "apply", "--agent", agentID)
	e.AddUser("coord", secrets["coord"], roles.Coordinator)
	e.AddUser(agentID, secrets[agentID], roles.Agent, roles.AgentPrefix+agentID)
	e.AddUser("ops", secrets["ops"], roles.Operator)

	dir := t.TempDir()
	var lines strings.Builder
	for i := range 50 {
		fmt.Fprintf(&lines, "secure line %02d of the end-to-end test\n", i)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app.log"), []byte(lines.String()), 0o644))
	// As root, so the agent role gains the topic's heartbeats; the
	// operator's put (below) cannot grant.
	logctlAs("root", "topic", "put", "web", "--path", dir+"/*.log", "--kafka-topic", "web-secure")

	coordListen, agentListen := testenv.FreeAddr(t), testenv.FreeAddr(t)
	coord := startProc(t, filepath.Join(bin, "coordinator"), []string{"COORDINATOR_ETCD_PASSWORD=" + secrets["coord"]},
		append(e.ClientFlags("coord"), "--id", "c1", "--listen", coordListen, "--lease-ttl", "2s")...)
	agent := startProc(t, filepath.Join(bin, "logagent"), []string{"LOGAGENT_ETCD_PASSWORD=" + secrets[agentID],
		"LOGAGENT_KAFKA_BROKERS=" + strings.Join(k.Brokers(), ",")},
		append(e.ClientFlags(agentID), "--id", agentID, "--listen", agentListen, "--allow-path", dir,
			"--scan-interval", "100ms", "--lease-ttl", "3s", "--fingerprint-bytes", "16", "--state-dir", t.TempDir())...)

	testenv.WaitFor(t, 60*time.Second, "50 lines in Kafka", func() bool {
		if s := coord.out.String() + agent.out.String(); strings.Contains(s, "permission denied") {
			t.Fatalf("a component was refused by etcd:\n%s", s)
		}
		return len(testenv.ReadAll(t, k.Brokers(), "web-secure")) == 50
	})
	status := logctlAs("ops", "status")
	require.Contains(t, status, "c1", "the operator reads the leader")
	testenv.WaitFor(t, 30*time.Second, "the agent's checkpoint at the file's end", func() bool {
		resp, err := e.Root().Get(context.Background(), "/offsets/web/", clientv3.WithPrefix())
		require.NoError(t, err)
		return len(resp.Kvs) == 1 && strings.Contains(string(resp.Kvs[0].Value), fmt.Sprintf(`"offset":%d,`, lines.Len()))
	})

	seen := map[string]string{}
	for name, addr := range map[string]string{"coordinator /metrics": coordListen, "agent /metrics": agentListen} {
		code, body := testenv.HTTPGet("http://" + addr + "/metrics")
		require.Equal(t, 200, code, body)
		seen[name] = body
	}

	// What a compromised agent host cannot do.
	agentCli := e.ClientAs(agentID, secrets[agentID])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for what, do := range map[string]func() error{
		"write /topics/web": func() error { _, err := agentCli.Put(ctx, "/topics/web", `{"paths":["/etc/*"]}`); return err },
		"delete /coordinator/election/": func() error {
			_, err := agentCli.Delete(ctx, "/coordinator/election/", clientv3.WithPrefix())
			return err
		},
		"write /status/coordinator": func() error { _, err := agentCli.Put(ctx, "/status/coordinator", "{}"); return err },
	} {
		require.ErrorIs(t, do(), rpctypes.ErrPermissionDenied, "the agent's credentials must not %s", what)
	}

	// A clean stop revokes each lease, which etcd allows only with write
	// permission on every key attached to it.
	agent.stop(t)
	coord.stop(t)
	for name, p := range map[string]*secureProc{"agent": agent, "coordinator": coord} {
		require.NotContains(t, p.out.String(), "permission denied", "%s was refused by etcd", name)
	}

	// Secrets: not in /metrics, status keys, logs, --help or --check-config.
	seen["coordinator log"], seen["agent log"], seen["logctl status"] = coord.out.String(), agent.out.String(), status
	resp, err := e.Root().Get(ctx, "/", clientv3.WithPrefix())
	require.NoError(t, err)
	for _, kv := range resp.Kvs {
		seen["etcd key "+string(kv.Key)] = string(kv.Value)
	}
	everySecret := []string{"LOGAGENT_ETCD_PASSWORD=" + secrets[agentID], "COORDINATOR_ETCD_PASSWORD=" + secrets["coord"],
		"LOGCTL_ETCD_PASSWORD=" + secrets["ops"], "LOGAGENT_KAFKA_SASL_PASSWORD=" + kafkaSecret}
	for _, b := range []string{"logagent", "coordinator", "logctl"} {
		out, _ := runBin(filepath.Join(bin, b), everySecret, "--help")
		seen[b+" --help"] = out
	}
	for name, args := range map[string][]string{
		"logagent --check-config":    {"--check-config", "--id", "h1", "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u"},
		"coordinator --check-config": {"--check-config", "--id", "c9"},
	} {
		b := strings.Fields(name)[0]
		out, err := runBin(filepath.Join(bin, b), everySecret, append(e.ClientFlags("x"), args...)...)
		require.NoError(t, err, "%s: %s", name, out)
		seen[name] = out
		out, _ = runBin(filepath.Join(bin, b), nil, append(e.ClientFlags("x"), append(args, "--etcd-password", "flag-pw-0d1e")...)...)
		seen[name+" with the password as a flag"] = out
	}
	secrets["flag"], secrets["kafka"] = "flag-pw-0d1e", kafkaSecret
	for where, text := range seen {
		for who, secret := range secrets {
			require.NotContains(t, text, secret, "%s's password shows in %s", who, where)
		}
	}
}
