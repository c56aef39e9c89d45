package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
)

// coordProc is one real coordinator process.
type coordProc struct {
	id   string
	cmd  *exec.Cmd
	done chan struct{}
}

// alive reports whether the process has not exited.
func (p *coordProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// coords runs the coordinator pair: the real binary, as processes, with
// their output in dir/coord-<n>.log.
type coords struct {
	o   *options
	ks  keyspace.Space
	cli *clientv3.Client
	dir string

	mu    sync.Mutex
	procs map[string]*coordProc
}

func newCoords(o *options, ks keyspace.Space, cli *clientv3.Client, dir string) *coords {
	return &coords{o: o, ks: ks, cli: cli, dir: dir, procs: map[string]*coordProc{}}
}

// start starts (or restarts) coordinator id.
func (c *coords) start(id string) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(c.dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file of %s: %w", id, err)
	}
	args := []string{"--id", id, "--listen", listen, "--etcd-endpoints", strings.Join(c.o.endpoints, ","),
		"--lease-ttl", c.o.coordTTL.String(),
		// A status refreshed every second lets the settle check see that
		// an idle leader has planned after the last change (settle.go);
		// the default is 10 s. --coordinator-flag, given later, wins.
		"--status-interval", "1s"}
	if c.ks.Root() != "" {
		args = append(args, "--etcd-prefix", c.ks.Root())
	}
	args = append(args, c.o.coordArgs...)
	cmd := exec.Command(filepath.Join(c.o.bin, "coordinator"), args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a Ctrl-C reaches the simulator, which stops
	// the coordinators itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start coordinator %s: %w", id, err)
	}
	p := &coordProc{id: id, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[id] = p
	c.mu.Unlock()
	return nil
}

// kill sends SIGKILL to coordinator id and waits until it is gone.
func (c *coords) kill(id string) error {
	p := c.proc(id)
	if p == nil {
		return fmt.Errorf("no coordinator %q", id)
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill coordinator %s: %w", id, err)
	}
	<-p.done
	return nil
}

func (c *coords) proc(id string) *coordProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[id]
}

// pid of coordinator id, 0 if it is not running.
func (c *coords) pid(id string) int {
	p := c.proc(id)
	if p == nil || !p.alive() {
		return 0
	}
	return p.cmd.Process.Pid
}

// running returns the ids of the coordinators running now.
func (c *coords) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, p := range c.procs {
		if p.alive() {
			out = append(out, id)
		}
	}
	return out
}

// exited names a coordinator that exited by itself, if any.
func (c *coords) exited() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.procs {
		if !p.alive() {
			return id
		}
	}
	return ""
}

// stop stops every coordinator with SIGTERM (they resign and exit within
// 10 s by contract), then SIGKILL for any still there.
func (c *coords) stop() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		if p.alive() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		t := time.NewTimer(12 * time.Second)
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Stop()
	}
}

// leader is the id of the election's current leader (the value of the
// oldest candidate key), "" if none.
func (c *coords) leader(ctx context.Context) (string, error) {
	id, _, err := c.leaderTerm(ctx)
	return id, err
}

// leaderTerm is the leader's id and election key (a new key is a new term).
func (c *coords) leaderTerm(ctx context.Context) (id, key string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.ks.ElectionPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", c.ks.ElectionPrefix(), err)
	}
	if len(resp.Kvs) == 0 {
		return "", "", nil
	}
	return string(resp.Kvs[0].Value), string(resp.Kvs[0].Key), nil
}

// freeAddr is a free loopback address for a coordinator's --listen.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
